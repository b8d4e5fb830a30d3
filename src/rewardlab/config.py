"""The experiment configuration: one YAML tree, validated against one JSON Schema before anything runs.

``validate`` fills the schema's defaults in place and raises ``ConfigError`` naming the offending key
(``policy.kl_coef: -1 is less than the minimum of 0``). The Snakefile calls it at parse time, so a bad
config is refused before any job starts; ``rewardlab validate`` does the same from the shell.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

RESOURCE_DEFAULTS = {"threads": 1, "mem_mb": 2000, "runtime": 30, "gpu": 0, "seeds_per_job": 1}
STAGES = ("preprocess", "sft", "pool", "label", "reward", "policy", "evaluate")


class ConfigError(ValueError):
    """A configuration problem, phrased with the dotted key that causes it."""


def load_schema() -> dict[str, Any]:
    """The config schema, with the names the registries hold filled in (losses and their hyper-parameters,
    algorithms, shapings, dataset formats, tasks): they are declared once, where they are implemented."""
    text = resources.files("rewardlab").joinpath("schemas/config.schema.yaml").read_text()
    return with_registered_names(yaml.safe_load(text))


def with_registered_names(schema: dict[str, Any]) -> dict[str, Any]:
    from rewardlab.data.readers import READERS
    from rewardlab.losses.registry import LOSSES, loss_params_schema
    from rewardlab.rl.algorithms import ALGORITHMS
    from rewardlab.rl.offline import OFFLINE
    from rewardlab.rl.shapings import SHAPINGS
    from rewardlab.tasks import TASKS

    top = schema["properties"]
    reward, policy = top["reward"]["properties"], top["policy"]["properties"]
    reward["losses"]["items"] = {"enum": LOSSES.names()}
    reward["loss_params"]["properties"] = loss_params_schema()
    policy["algorithms"]["items"] = {"enum": ALGORITHMS.names() + OFFLINE.names()}
    policy["shaping_variants"]["additionalProperties"]["properties"]["shaping"] = {"enum": SHAPINGS.names()}
    policy["overrides"]["propertyNames"] = {"enum": ALGORITHMS.names()}
    top["data"]["properties"]["source"]["properties"]["format"]["enum"] = READERS.names()
    top["task"]["properties"]["name"]["enum"] = TASKS.names()
    return schema


def _with_defaults(validator_class: type) -> type:
    """A validator that also writes each property's ``default`` into the instance (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        # Name the unknown key itself, not only its parent.
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = ".".join(filter(None, [path, extra[0] if extra else ""]))
        return f"{path}: unknown key (allowed: {', '.join(sorted(error.schema.get('properties', {})))})"
    if error.validator == "pattern" and "x-pattern-message" in error.schema:
        return f"{path}: {error.instance!r} is not {error.schema['x-pattern-message']}"
    return f"{path or '<root>'}: {error.message}"


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` in place, fill in defaults, and return it. Raises ``ConfigError``."""
    if not isinstance(config, dict):
        raise ConfigError("<root>: the configuration must be a mapping")
    schema = load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    # Two passes: defaults are filled on the first, so the second sees the completed tree.
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            lines = "\n  ".join(_key_path(e) for e in errors)
            raise ConfigError(f"invalid configuration:\n  {lines}")
    _check_cross_fields(config, schema)
    return config


def _check_cross_fields(config: dict[str, Any], schema: dict[str, Any]) -> None:
    policy = config["policy"]
    schema = {**schema["properties"]["policy"], "$defs": schema["$defs"]}
    option_names = set(schema["properties"]) - {"algorithms", "shapings", "overrides", "shaping_variants", "dpo"}
    variants = policy["shaping_variants"]
    sources = [(f"overrides.{algo}", values) for algo, values in policy["overrides"].items()]
    sources += [(f"shaping_variants.{name}", {k: v for k, v in values.items() if k != "shaping"})
                for name, values in variants.items()]
    for where, override in sources:
        unknown = sorted(set(override) - option_names)
        if unknown:
            raise ConfigError(f"policy.{where}.{unknown[0]}: unknown key (allowed: policy options)")
        merged = {**policy, **override}
        for error in jsonschema.Draft202012Validator(schema).iter_errors(merged):
            path = ".".join(str(p) for p in error.absolute_path)
            raise ConfigError(f"policy.{where}.{path}: {error.message}")
    _check_shaping_names(policy)
    baseline = config["evaluate"]["baseline_policy"]
    if is_shaping_baseline(baseline) and baseline not in policy["shapings"]:
        raise ConfigError(f"evaluate.baseline_policy: {baseline!r} is not sft, bon<N>, <algo>-<shaping>, "
                          "<algo>-offline, or a name in policy.shapings")
    _check_decodings(config["evaluate"])
    _check_rouge_has_references(config)
    if config["rollout_backend"] == "vllm" and config["device"] == "cpu":
        raise ConfigError("rollout_backend: vllm samples on a CUDA GPU, and device is cpu (device: auto or cuda, or "
                          "rollout_backend: lean)")
    if policy["prompts_per_step"] < policy["minibatches"]:
        raise ConfigError(
            f"policy.minibatches: {policy['minibatches']} is more than policy.prompts_per_step "
            f"({policy['prompts_per_step']})"
        )
    if config["labels"]["num_prompts"] > config["data"]["num_prompts_train"]:
        raise ConfigError(
            f"labels.num_prompts: {config['labels']['num_prompts']} is more than data.num_prompts_train "
            f"({config['data']['num_prompts_train']})"
        )
    if config["data"].get("source"):
        _check_real_data(config)
        return
    if config["sft"]["epochs"] == 0 and not config["model"].get("name_or_path"):
        raise ConfigError("sft.epochs: 0 needs model.name_or_path (a pretrained policy to start from)")
    budget = config["model"]["n_positions"]
    if config["task"]["max_new_tokens"] + 8 > budget:
        raise ConfigError(
            f"task.max_new_tokens: {config['task']['max_new_tokens']} plus the prompt does not fit "
            f"model.n_positions ({budget})"
        )


def _check_shaping_names(policy: Mapping[str, Any]) -> None:
    from rewardlab.rl.shapings import SHAPINGS

    registered, variants = SHAPINGS.names(), policy["shaping_variants"]
    for name in variants:
        if name in registered:
            raise ConfigError(f"policy.shaping_variants.{name}: the name of a registered shaping; choose another")
    for index, name in enumerate(policy["shapings"]):
        if name not in registered and name not in variants:
            raise ConfigError(f"policy.shapings.{index}: {name!r} is neither a registered shaping "
                              f"({', '.join(registered)}) nor a name in policy.shaping_variants")


def _check_decodings(evaluate: Mapping[str, Any]) -> None:
    """Two entries of evaluate.decoding that name the same decoding would be two rows of one name."""
    from rewardlab.evaluate.decoding import parse_decodings

    seen: dict[str, int] = {}
    for index, decoding in enumerate(parse_decodings(evaluate["decoding"], evaluate["temperature"])):
        if decoding.label in seen:
            raise ConfigError(f"evaluate.decoding.{index}: the same decoding ({decoding.label}) as entry "
                              f"{seen[decoding.label]}")
        seen[decoding.label] = index


def run_composite(reward_composite: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """A run's RL reward weights: reward.composite with the run's policy options' ``composite`` merged over it."""
    return {**reward_composite, **(options.get("composite") or {})}


def composites(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every RL reward the config defines, with the key that sets it: reward.composite, then each policy-level
    change merged over it (policy.composite, an algorithm's override, a shaping variant)."""
    base = run_composite(config["reward"]["composite"], config["policy"])
    found = [("policy.composite" if config["policy"].get("composite") else "reward.composite", base)]
    for where in ("overrides", "shaping_variants"):
        for name, values in config["policy"][where].items():
            if values.get("composite"):
                found.append((f"policy.{where}.{name}.composite", run_composite(base, values)))
    return found


def _check_rouge_has_references(config: Mapping[str, Any]) -> None:
    """A ROUGE weight needs reference outputs: the task's (summarize), never SentiGram's or real data's."""
    from rewardlab.tasks import TASKS

    task = config["task"]["name"]
    if is_real_data(config):
        has_references, where = config["data"]["source"]["prompts_from"] == "sft", "data.source.prompts_from: pairs"
        remedy = "use data.source.prompts_from: sft (prompts with their SFT completions as references)"
    else:
        has_references, where = TASKS.get(task).reference is not None, f"task {task!r}"
        remedy = "task.name: summarize has them"
    for key, composite in composites(config):
        if composite.get("rouge") and not has_references:
            raise ConfigError(f"{key}.rouge: {composite['rouge']} but {where} has no reference outputs to compute "
                              f"ROUGE against ({remedy}); set it to 0")


def is_shaping_baseline(policy: str) -> bool:
    """``evaluate.baseline_policy`` names a shaping (each algorithm against its own run with it), not a policy:
    no ``-`` and neither ``sft`` nor ``bon<N>``."""
    return "-" not in policy and policy != "sft" and not re.fullmatch(r"bon\d+", policy)


def base_shaping(config: Mapping[str, Any], name: str) -> str:
    """The registered shaping behind a name of ``policy.shapings`` (itself, or a variant's ``shaping``)."""
    variant = config["policy"]["shaping_variants"].get(name)
    return variant["shaping"] if variant else name


def flip_rates(config: Mapping[str, Any]) -> list[float]:
    """``labels.flip_rate`` as a list (a single number is a one-element sweep)."""
    value = config["labels"]["flip_rate"]
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def noise_tag(flip_rate: float) -> str:
    """The label-noise part of run names: ``eps0.0``, ``eps0.25`` (as DVC's templating writes the number)."""
    return f"eps{float(flip_rate)}"


def deep_update(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into ``base`` (lists and scalars replace)."""
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML mapping, or a ``ConfigError`` that names the file (and the line, for a syntax error)."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: {where}not valid YAML ({problem})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping")
    return loaded


def apply_experiment(config: dict[str, Any], overrides: Mapping[str, Any], experiments: str | Path) -> dict[str, Any]:
    """Merge the named experiment (``experiment: <name>``) into ``config`` in place.

    ``config`` is the base file with the command line merged over it (what Snakemake hands the Snakefile);
    ``overrides`` is the command line alone (``--configfile`` files and ``--config``), merged again after the
    experiment file so that it still wins: base < config/experiments/<name>.yaml < command line. That order is
    what makes ``dvc exp run -S experiment=quick`` (params.yaml, passed as a --configfile) equal to
    ``snakemake --configfile config/experiments/quick.yaml``.
    """
    name = config.get("experiment")
    if name is None:
        return config
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"experiment: {name!r} is not a file name in {experiments}/ (letters, digits, _ . -)")
    path = Path(experiments) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(experiments).glob("*.yaml"))
        raise ConfigError(f"experiment: {name!r} has no file {path} (known: {', '.join(known) or 'none'})")
    overlay = read_yaml(path)
    if overlay.get("experiment", name) != name:
        raise ConfigError(f"{path}: sets experiment: {overlay['experiment']!r}, another experiment")
    overlay.setdefault("name", name)
    deep_update(config, overlay)
    deep_update(config, overrides)
    if config.get("name", name) != name:
        raise ConfigError(f"name: {config['name']!r} is not the experiment's name {name!r}: a named experiment "
                          f"writes results/{name}/, where dvc.yaml looks for it (rename the file instead)")
    config["name"] = name
    return config


def load(*paths: str | Path) -> dict[str, Any]:
    """Load YAML files in order (later ones override earlier ones), merge a named ``experiment`` (looked up
    in ``experiments/`` beside the first file), and validate the merge."""
    config: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for index, path in enumerate(paths):
        loaded = read_yaml(path)
        deep_update(config, loaded)
        if index:
            deep_update(overrides, loaded)
    if paths:
        apply_experiment(config, overrides, Path(paths[0]).parent / "experiments")
    return validate(config)


def stage_resources(config: Mapping[str, Any], stage: str) -> dict[str, int]:
    """Resources of one stage: built-in defaults < ``resources.default`` < ``resources.<stage>``."""
    merged = dict(RESOURCE_DEFAULTS)
    merged.update(config["resources"].get("default", {}))
    merged.update(config["resources"].get(stage, {}))
    return merged


def is_real_data(config: Mapping[str, Any]) -> bool:
    """True when the experiment reads real preference data (``data.source``) instead of SentiGram. A stage's config
    slice may hold no ``data`` section at all (the toy task's evaluation: ``data.source`` is absent)."""
    return bool(config.get("data", {}).get("source"))


def _check_real_data(config: dict[str, Any]) -> None:
    """What real data supports today: pair losses on the dataset's own labels, reward models and their evaluation."""
    from rewardlab.losses.registry import LOSSES
    from rewardlab.rl.shapings import SHAPINGS

    if not config["model"].get("name_or_path"):
        raise ConfigError("model.name_or_path: real data (data.source) needs a local Hugging Face causal LM")
    from rewardlab.data.readers import READERS

    fmt = config["data"]["source"]["format"]
    shapes = READERS.get(fmt).label_shapes
    for loss in config["reward"]["losses"]:
        if LOSSES.get(loss).label_shape not in shapes:
            raise ConfigError(f"reward.losses: {loss} needs {LOSSES.get(loss).label_shape}; data.source.format "
                              f"{fmt} gives {' and '.join(shapes)} (ratings: helpsteer2's main data; rankings: "
                              "ultrafeedback, scored_responses)")
    if flip_rates(config) != [0.0]:
        raise ConfigError("labels.flip_rate: real data keeps its own labels; set [0.0]")
    source = config["data"]["source"]
    if source["prompts_from"] == "sft" and not source.get("sft_path"):
        raise ConfigError("data.source.prompts_from: sft takes the prompts and references from data.source.sft_path, "
                          "which is not set")
    for name in config["policy"]["shapings"]:
        if "gold_credits" in SHAPINGS.get(base_shaping(config, name)).needs:
            raise ConfigError(f"policy.shapings: {name} needs the task's per-token gold credit; real data has none")
