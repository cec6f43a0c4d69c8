"""``drop_exact_duplicates``: drop interactions equal in user, item and time, and nothing else.

RecBole's ``rm_dup_inter`` keeps one interaction per user-item pair, which also deletes genuine repeat consumption
at other times. An exact duplicate (same user, item and timestamp) is a logging artefact, and under leave-one-out a
duplicated last interaction makes the validation target equal the test target. RecBole has no key for removing only
those, so RecBole's ``Dataset._remove_duplication`` (the first filter of its ``_data_filtering``) is given one: with
``drop_exact_duplicates: True`` the rows equal in the user, item and time columns loaded are dropped, the first of
each kept, before ``rm_dup_inter`` and the other filters apply. Without the key nothing changes.
"""

from recbole.data.dataset.dataset import Dataset

_recbole_remove_duplication = Dataset._remove_duplication


def remove_duplication(self):
    """Drop exact duplicates when ``drop_exact_duplicates`` is set, then RecBole's own ``rm_dup_inter``."""
    if self.config["drop_exact_duplicates"]:
        keys = [field for field in (self.uid_field, self.iid_field, self.time_field)
                if field is not None and field in self.inter_feat]
        before = len(self.inter_feat)
        self.inter_feat.drop_duplicates(subset=keys, keep="first", inplace=True)
        self.logger.info(f"drop_exact_duplicates: {before - len(self.inter_feat)} of {before} interactions were "
                         f"exact duplicates (equal in {', '.join(keys)}) and were dropped")
    _recbole_remove_duplication(self)


def install():
    """Give RecBole's ``Dataset`` :func:`remove_duplication`; safe to call more than once."""
    Dataset._remove_duplication = remove_duplication
