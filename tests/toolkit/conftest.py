"""Fixtures every test module here may ask for by name, from aws_testkit: ``moto`` (a moto
server on 127.0.0.1, one per module) and ``aws`` (boto3 in this process pointed at it).
Importing them here, not in each module, is how pytest shares fixtures (a module that imports
a fixture and takes it as an argument redefines the name: ruff F811)."""

from aws_testkit import aws, moto  # noqa: F401
