"""The sitegen MkDocs plugin's former module name: the plugin is :mod:`sitegen.mkdocs`.

Kept so an environment installed before the entry point moved (``mkdocs.plugins``:
``sitegen = sitegen.mkdocs:SitegenPlugin``) still finds the plugin until it is reinstalled.
"""

from .mkdocs import SitegenPlugin

__all__ = ["SitegenPlugin"]
