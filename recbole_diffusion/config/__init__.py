"""The configuration of a run: merging RecBole's ``Config`` in this package's order (:mod:`.configurator`) and the
checks of the merged keys and of the user's config files (:mod:`.checks`)."""
