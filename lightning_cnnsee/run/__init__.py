"""One visualization run, no Lightning: options checked at construction (:mod:`.options`), the layers chosen
(:mod:`.selection`), the fixed images split out of a batch (:mod:`.batches`), each rank's share (:mod:`.shares`) and
:func:`~lightning_cnnsee.run.visualization.visualize`, which returns :class:`~lightning_cnnsee.run.results.Results`.
Uses the core below it; knows nothing of pictures, writers or the callback.
"""
