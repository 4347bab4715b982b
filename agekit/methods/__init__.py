"""Age-estimation methods, registered by name (see base.py for the interface)."""
from agekit.methods import (  # noqa: F401  (registration)
    classification,
    dldl,
    forest,
    mean_residue,
    mean_variance,
    ordinal,
    regression,
    soft_labels,
)
from agekit.methods.base import (
    METHODS,
    AgeDistribution,
    Method,
    create_method,
    list_methods,
    register_method,
)

__all__ = ["METHODS", "AgeDistribution", "Method", "create_method", "list_methods", "register_method"]
