"""DAG delivery through S3: the sync agent (``agent``) and the upload side (``push``).

Both sides share ``s3``: the generation manifest, the packs, the listing, the key <-> path
mapping and its checks, and the bounded thread pool. The agent must also run alone in its container image, so nothing in this
package imports stack.yaml support or anything beyond botocore at module level (``pull`` and
``push`` read stack.yaml when run through the toolkit CLI).
"""
