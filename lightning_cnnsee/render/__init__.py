"""Pictures and numbers from a run's :class:`~lightning_cnnsee.run.results.Results`: ``{tag: image}``
(:mod:`.images`) and ``{tag: value}`` (:mod:`.scalars`). Writes nothing; the sinks do.
"""
