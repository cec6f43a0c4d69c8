"""What evaluation adds to RecBole's: per-user metrics and target ranks (:mod:`.metrics`), the paired statistics of a
comparison (:mod:`.statistics`) and which items are masked at evaluation (:mod:`.history_mask`)."""
