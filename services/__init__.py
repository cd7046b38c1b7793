"""The petition-intake services, one package each."""
