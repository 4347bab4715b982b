"""agekit methods: list the registered methods."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("methods", help="list the registered age-estimation methods")
    p.set_defaults(func=run)


def run(args) -> int:
    from agekit.methods import METHODS

    for name in sorted(METHODS):
        cls = METHODS[name]
        print(f"{name:18s} {cls.description}\n{'':18s} {cls.paper}")
    return 0
