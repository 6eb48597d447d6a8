"""AWS setup as code: ``plan``, ``apply`` and ``bootstrap``.

The work is a list of *convergers*, one per resource kind (``s3.py``, ``iam.py``, ``ecr.py``,
``efs.py``, ``eks.py``). Each reads the live state, works out the steps that would bring it to
what stack.yaml and iam/ describe, and (unless planning) takes them. Reading first is what makes
a second run make no mutating call, and what lets an interrupted run be finished by running it
again: every converger finds what an earlier run left behind by a stable name.

``resources.py`` says which convergers each DAG mode needs; ``command.py`` is the CLI.
"""
