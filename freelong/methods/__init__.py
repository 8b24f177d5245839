"""Methods: the :class:`Method` base and registry (:mod:`~freelong.methods.base`) and the paper's own family.

FreeLong (:mod:`~freelong.methods.freelong`) and FreeLong++ (:mod:`~freelong.methods.freelong_pp`) live here;
every comparison method (direct, sliding window, FreeNoise, RIFLEx, ...) lives in the top-level ``baselines``
package, one module per method. All of them are found through the ``freelong.methods`` entry points
(``pyproject.toml``); ``python -m freelong methods`` lists what is registered.
"""

from .base import LEVELS, METHODS, Method, available_methods, get_method, method_class, register_method

__all__ = ["LEVELS", "METHODS", "Method", "available_methods", "get_method", "method_class", "register_method"]
