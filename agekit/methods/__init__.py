"""Age-estimation methods, registered by name (see base.py for the interface)."""
from agekit.methods import dldl, regression  # noqa: F401  (registration)
from agekit.methods.base import METHODS, AgeDistribution, Method, create_method, register_method

__all__ = ["METHODS", "AgeDistribution", "Method", "create_method", "register_method"]
