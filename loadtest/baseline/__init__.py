"""The seed design (docs: /work/shared/ORIGINAL-DESIGN.md) implemented literally, as a benchmark reference.

Not part of the product. One transaction per request (insert the game session, upsert the total, ZINCRBY inside
the transaction, then COMMIT), top-10 by ZREVRANGE, rank by ZREVRANK, no push: watchers poll ``/top``.
"""
