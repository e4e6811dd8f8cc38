"""gennet-toolkit: production building blocks for Python ASGI services.

Import the module you need by its full path, for example
``from gennet_toolkit.error_handler import ErrorHandlerMiddleware``. This package
imports none of its 24 modules, so using one never loads another's dependencies.
"""

from gennet_toolkit._version import __version__

__all__ = ["__version__"]
