"""The Lightning glue: the :class:`~lightning_cnnsee.callback.cnnsee.CNNSee` callback (:mod:`.cnnsee`), both Lightning
namespaces (:mod:`.compat`), when to run and at what cost (:mod:`.schedule`, :mod:`.budget`), collectives that are
no-ops in one process (:mod:`.distributed`) and the fixed images shared from rank 0 (:mod:`.fixed_images`).
"""
