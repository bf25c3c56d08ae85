"""The pure-PyTorch core: explanations of any ``nn.Module``, in a notebook or under any trainer; no Lightning.

CAMs (:mod:`.cam`, :mod:`.targets`), pixel attributions (:mod:`.attributions`), filter and class ascent
(:mod:`.ascent`, :mod:`.objectives`), feature maps (:mod:`.activations`), how faithful the maps are and how they
change (:mod:`.metrics`, :mod:`.drift`), on hooks that always clean up (:mod:`.hooks`) and layer names
(:mod:`.layers`). Imports nothing of the run, the pictures, the writers or the callback.
"""
