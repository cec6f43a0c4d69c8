"""The interaction data: its checks before and after RecBole reads it (:mod:`.checks`), the removal of exact
duplicates RecBole lacks (:mod:`.duplicates`, installed here), the length-aware loaders (:mod:`.dataloader`) and the
user slices that the self-check, the tests and the benchmarks train on (:mod:`.slices`)."""

from recbole_diffusion.data import duplicates

duplicates.install()
