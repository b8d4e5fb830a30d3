# rewardlab: preprocess → SFT → label → reward model → policy → evaluate → report.
# The table of contents: config, validation, rule files, and the final targets.
# Main job: `snakemake --cores all` (the default profile is workflow/profiles/default).
from rewardlab.config import ConfigError, apply_experiment, validate
from rewardlab.dag import check_inputs


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"  # the report's first page: the headline tables and the frontier


try:
    # `experiment: <name>` (params.yaml under DVC, or --config experiment=<name>) merges
    # config/experiments/<name>.yaml over config/config.yaml; the command line still wins.
    apply_experiment(config, workflow.config_settings.overwrite_config, "config/experiments")
    validate(config)  # fills defaults; a bad key or value stops here, before any job runs
    check_inputs(config)  # model folders, data files, and data/processed/<name>/ made with the same settings
except ConfigError as error:
    raise SystemExit(f"rewardlab: {error}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/reward.smk"
include: "workflow/rules/policy.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        summary_outputs(),
    default_target: True
