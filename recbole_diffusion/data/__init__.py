"""The interaction data: its checks before and after RecBole reads it (:mod:`.checks`) and the user slices that the
self-check, the tests and the benchmarks train on (:mod:`.slices`)."""
