"""Item text as vectors: the local sentence encoder (:mod:`.encoder`) and the per-item vectors RecBole's item
features give, cached in RecBole's atomic feature-file format or brought by the user (:mod:`.item_vectors`).
Everything here is optional: it needs the ``text`` extra (``pip install -e ".[text]"``) only when an item table is
built from text."""
