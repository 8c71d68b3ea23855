"""The shipped models, installed as package data ``legato.models`` (see legato.shipped); the model card is README.md."""
