"""The file boundary: versioned JSON and YAML documents in, frozen values out (and back).

Each document is validated with a pydantic schema whose fields are documented in docs/formats.md;
a document that does not validate raises the matching `coinfer.errors.UserInputError` subclass
with the file, the field and what to do.
"""
