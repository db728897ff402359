"""`tritonize models`: every model tritonize can see, with its description and where it comes from."""
from __future__ import annotations

from .common import add_models_argument, out


def register(sub) -> None:
    p = sub.add_parser("models", help="list the built-in and installed models, or describe those named")
    add_models_argument(p, "models to describe: names or references FILE.py:ATTR / package.module:ATTR "
                           "(default: every built-in and installed model)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..models.references import entry_point_specs
    from ..models.registry import REGISTRY, get_spec

    installed = entry_point_specs()
    names = args.models or [*REGISTRY, *sorted(installed)]
    specs = [get_spec(name) for name in names]
    table = Table("model", "from", "description", title="models")
    for spec in specs:
        if spec.source is not None:
            origin = spec.source.reference
        else:
            origin = "built-in" + (f", Triton kernels over {spec.base_model}" if spec.base_model else "")
        table.add_row(spec.name, escape(origin), escape(spec.description))
    out.print(table)
    if args.models:  # the models asked about: their tensors too
        for spec in specs:
            where = f" (defined in {spec.source.file})" if spec.source else ""
            out.print(f"{spec.name}{where}\n  inputs  {spec.describe_inputs()}\n  outputs {spec.describe_outputs()}", highlight=False,
                      markup=False)
    else:
        out.print("Your own model: name it by reference, e.g. tritonize export path/to/model.py:SPEC "
                  "(README, \"Your own model\").", highlight=False, markup=False)
    return 0
