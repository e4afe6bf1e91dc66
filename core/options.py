"""Helpers shared by the command lines (``python -m compress``, ``sim``, ``accel.verify``,
``accel.build``, ``accel.run``).

- :func:`flag_message`: a library error (which names Python parameters, ``n_pes must be
  1..64``) restated with the command line's own flags (``--pes must be 1..64``);
- :func:`fail`: print that message the way argparse does and exit (status 2: a usage error);
- :func:`check_range`, :func:`check_per_layer`, :func:`check_output_path`: checks of options,
  run before a command does any work, with messages that name the flag and the allowed values.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["PARAMETER_FLAGS", "check_output_path", "check_per_layer", "check_range", "fail",
           "flag_message"]

#: Library parameter names whose flag is not simply ``--`` plus the name with dashes.
PARAMETER_FLAGS = {
    "n_pes": "--pes",
    "index_bits": "--bits",
    "target_mhz": "--clock-mhz",
    "seed": "--seed",
}

#: A parameter name is restated only where a message states something about it: at the
#: start of the message or of a clause, followed by one of these verbs.
_VERBS = r"must|has|have|needs|cannot|is|are"


def _flags_of(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def flag_message(message: str, parser=None, extra: dict | None = None) -> str:
    """``message`` with the Python parameter names it states something about replaced by the
    command line's flags.

    A name ``foo_bar`` becomes ``--foo-bar`` when ``parser`` has that option (every name does
    when no parser is given), or the flag :data:`PARAMETER_FLAGS` (updated with ``extra``)
    gives it. Only names at the start of the message or of a clause (after ``:``, ``;``, ``,``
    or ``(``) and followed by a verb (``must``, ``has`` ...) are replaced, so that prose
    (``the model has no integer data``) stays as it is; a name already written as a flag is
    left alone.
    """
    known = dict(PARAMETER_FLAGS)
    known.update(extra or {})
    flags = _flags_of(parser) if parser is not None else None

    def flag_for(name: str) -> str | None:
        candidates = [known[name]] if name in known else []
        candidates.append("--" + name.replace("_", "-"))
        for flag in candidates:
            if flags is None or flag in flags:
                return flag
        return None

    def replace(match: re.Match) -> str:
        flag = flag_for(match.group("name"))
        return match.group(0) if flag is None else match.group("lead") + flag

    pattern = re.compile(rf"(?P<lead>^|[:;,(]\s*)(?P<name>[a-z][a-z0-9_]*)(?= (?:{_VERBS})\b)")
    return pattern.sub(replace, message)


def fail(parser, error, status: int = 2, extra: dict | None = None):
    """Exit as argparse's ``parser.error`` does (``prog: error: message``, status 2 by
    default), the message restated with the parser's flags (:func:`flag_message`)."""
    parser.exit(status, f"{parser.prog}: error: {flag_message(str(error), parser, extra)}\n")


def check_range(parser, flag: str, value, low=None, high=None, *, unit: str = "",
                low_open: bool = False, high_open: bool = False) -> None:
    """``parser.error`` unless ``low <= value <= high`` (either end may be ``None``, or open).

    The message names the flag and the allowed values: ``--pes must be 1..64, not 65``.
    """
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None and not (low_open or high_open):
        allowed = f"{low:g}..{high:g}{suffix}" if isinstance(low, float) or \
            isinstance(high, float) else f"{low}..{high}{suffix}"
    elif low is not None and high is not None:
        allowed = (f"{'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} "
                   f"{high:g}{suffix}")
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}{suffix}"
    else:
        allowed = f"{'<' if high_open else '<='} {high:g}{suffix}"
    shown = format(value, "g") if isinstance(value, float) else str(value)
    parser.error(f"{flag} must be {allowed}, not {shown}")


def check_per_layer(parser, flag: str, values, n_layers: int) -> None:
    """``parser.error`` unless ``values`` (a per-layer option) has one value or one per layer."""
    if values is None or len(values) in (1, n_layers):
        return
    parser.error(per_layer_message(flag, len(values), n_layers))


def per_layer_message(name: str, given: int, n_layers: int) -> str:
    """The refusal of a per-layer list with neither one value nor one per layer."""
    return (f"{name} has {given} values but the model has {n_layers} Linear layers: give one "
            f"value for all layers or one per layer")


def check_output_path(parser, flag: str, path, *, folder: bool) -> None:
    """``parser.error`` when ``path`` cannot be written: an output folder that is an existing
    file, or an output file that is an existing folder or whose parent is a file."""
    if path is None:
        return
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            parser.error(f"{flag} must be a folder, not the existing file {path}")
        parents = path.parents
    else:
        if path.is_dir():
            parser.error(f"{flag} must be a file, not the existing folder {path}")
        parents = path.parents
    for parent in parents:
        if parent.exists():
            if not parent.is_dir():
                parser.error(f"{flag}: {parent} is a file, not a folder")
            break
