"""The Markdown report of one protocol's result."""

from __future__ import annotations

import inspect

from osrkit.protocols.cifar import speed_table
from osrkit.protocols.registry import protocol_entry
from osrkit.protocols.results import sets_table, splits_tables


def render(name: str, r: dict) -> str:
    """Heading, how choices were made, the protocol's tables, the published numbers beside
    ours, and the target lines."""
    entry = protocol_entry(name)
    lines = [f"# Protocol `{name}`", "", inspect.getdoc(entry.run).split("\n\n")[0], ""]
    lines.append(
        f"Thresholds accept {r['accept_rate']:.0%} of the known validation split; no threshold, "
        "hyper-parameter or fusion member was chosen by looking at unknown data. Decision "
        f"scorer (each model's default, pre-declared): `{r['decision_scorer']}`. "
        f"Wall time {r['wall_s']:.1f} s."
    )
    lines.append("")
    if "splits" in r:
        lines += splits_tables(r)
    elif "sets" in r:
        lines += sets_table(r["sets"])
    elif "epochs" in r:
        lines += speed_table(r)
    if entry.compare is not None:
        lines += ["", f"Ours beside the published numbers ({entry.published_metric}):", ""]
        lines += entry.compare(r)
    if r.get("training", {}).get("models"):
        lines += ["", *compute_lines(r["training"])]
    lines += ["", *r["targets"]]
    return "\n".join(lines) + "\n"


def compute_lines(t: dict) -> list[str]:
    """The training compute of a protocol's models, and the FLOP-bound time on this CPU."""
    trained_here = [m for m in t["models"] if not m["from_cache"]]
    known = [m for m in t["models"] if m["pflop"] is not None]
    return [
        f"Training compute: {len(t['models'])} network(s), {len(trained_here)} trained in this run "
        f"(the others from the cache); {t['pflop']:.3f} PFLOP in all ({len(known)} with a known count; "
        "forward and backward, `osrkit.training.flops`). At this run's "
        f"{t['dtype']} `torch.mm` rate ({t['mm_gflops']:.0f} GFLOP/s) that is {t['flop_bound_s']:.0f} s; "
        f"training in this run took {t['train_s_here']:.0f} s.",
    ]
