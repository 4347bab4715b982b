"""What a bench asks for: `BenchOptions` (the command line's choices) and the parsers of its flags
(--seeds, --methods, --method-params, --sweep), which check method and parameter names before anything runs."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import yaml

from agekit.config import yaml_number
from agekit.errors import AgekitError

# Sweep/param names that mean the label range (data.age_min/age_max). The number of discrete labels of the
# softmax methods is their own parameter `step` (years between labels): --sweep dldl_v2.step=1,2,5,10.
LABEL_RANGE_KEYS = ("age_min", "age_max")


@dataclass
class BenchOptions:
    protocol: str = "standard"
    methods: str | None = None  # 'all' | 'a,b' | None (all, or none when sweeping)
    data: str | None = None
    root: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    seeds: list = field(default_factory=lambda: [0])
    size: int | None = None
    base: str | None = None
    out: str | None = None
    overrides: list = field(default_factory=list)
    method_params: str | None = None
    sweeps: list = field(default_factory=list)
    pretrained: list = field(default_factory=list)
    folds: int | None = None
    progress: bool = True
    eval_report: bool = True  # per-run report with plots and predictions.csv, or metrics.json only
    command: str = "agekit bench"


def parse_seeds(text) -> list[int]:
    """'3' -> [0, 1, 2] (a count); '0,4,7' or '3,' -> those seeds."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise AgekitError(f"--seeds {text!r}: give a count (3 = seeds 0,1,2) or a list (0,4,7)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise AgekitError(f"--seeds {text!r}: need at least one seed, no repeats, none negative")
    return seeds


def _value(text: str):
    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    return yaml_number(value) if isinstance(value, str) else value


def method_names() -> list[str]:
    from agekit.methods import METHODS

    return sorted(METHODS)


def check_method(name: str) -> str:
    known = method_names()
    if name not in known:
        raise AgekitError(f"unknown method '{name}'; known: {', '.join(known)}")
    return name


def method_param_names(name: str) -> list[str]:
    """The keyword parameters of a method's constructor (what method.params may set)."""
    from agekit.methods import METHODS

    sig = inspect.signature(METHODS[check_method(name)].__init__)
    skip = {"self", "in_features", *LABEL_RANGE_KEYS}
    return [p for p in sig.parameters if p not in skip
            and sig.parameters[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def check_param(method: str, param: str) -> None:
    if param in LABEL_RANGE_KEYS:
        return
    names = method_param_names(method)
    if param not in names:
        hint = ""
        if param in ("label_step", "step", "num_labels", "num_classes"):
            hint = (f" (the number of discrete labels is set by the label interval: {method}.step=1,2,5,10; "
                    f"or vary the label range with {method}.age_min=... / {method}.age_max=...)"
                    if "step" in names else
                    f" ({method} has no label grid; vary its label range with {method}.age_min=... or "
                    f"{method}.age_max=...)")
        raise AgekitError(f"method '{method}' has no parameter '{param}'; its parameters: "
                          f"{', '.join(names) or 'none'}{hint}")


def parse_methods(text: str | None, sweeping: bool) -> list[str]:
    if text is None:
        return [] if sweeping else method_names()
    text = text.strip()
    if text == "all":
        return method_names()
    names = []
    for name in (n.strip() for n in text.split(",")):
        if name and name not in names:
            names.append(check_method(name))
    if not names:
        raise AgekitError("--methods is empty; give 'all' or names such as dldl_v2,regression")
    return names


def parse_method_params(text: str | None) -> dict[str, dict]:
    """'dldl_v2:lam=0.5,sigma=3;soft_labels:g=5' -> {'dldl_v2': {'lam': 0.5, 'sigma': 3}, 'soft_labels': {'g': 5}}."""
    out: dict[str, dict] = {}
    for part in (p.strip() for p in (text or "").split(";")):
        if not part:
            continue
        if ":" not in part:
            raise AgekitError(f"--method-params '{part}': expected METHOD:key=value[,key=value]")
        method, rest = (s.strip() for s in part.split(":", 1))
        check_method(method)
        for item in (i.strip() for i in rest.split(",")):
            if not item:
                continue
            if "=" not in item:
                raise AgekitError(f"--method-params '{part}': '{item}' must look like key=value")
            key, raw = (s.strip() for s in item.split("=", 1))
            check_param(method, key)
            out.setdefault(method, {})[key] = _value(raw)
    return out


def parse_sweep(text: str) -> tuple[str, str, list[tuple[str, object]]]:
    """'dldl_v2.lam=0.1,1,10' -> ('dldl_v2', 'lam', [('0.1', 0.1), ('1', 1), ('10', 10)])."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise AgekitError(f"--sweep '{text}': expected METHOD.PARAM=v1,v2,... (e.g. dldl_v2.lam=0.1,1,10)")
    key, raw = text.split("=", 1)
    method, param = (s.strip() for s in key.split(".", 1))
    check_method(method)
    check_param(method, param)
    values = [(v.strip(), _value(v)) for v in raw.split(",") if v.strip()]
    if not values:
        raise AgekitError(f"--sweep '{text}': no values")
    return method, param, values


def slug(text: str) -> str:
    """A folder-safe name: 'dldl_v2[lam=0.1]' -> 'dldl_v2.lam=0.1'."""
    text = text.replace("[", ".").replace("]", "").replace(",", ".")
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("._") or "run"
