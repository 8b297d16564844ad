"""sitegen: private, client-only AI web apps from one YAML file."""
__version__ = "0.1.0"
