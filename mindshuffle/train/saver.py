"""The per-epoch checkpoints a run folder keeps beside last.ckpt and best.ckpt, in timm's ``CheckpointSaver``
spirit with MindCV's keys: ``keep_checkpoint_max`` k (> 1 turns it on), ``ckpt_save_policy`` ``latest_k`` (the
k most recent) or ``top_k`` (the k best by val top-1; ties: the later epoch), ``ckpt_save_interval`` N (every
N epochs and after the last).

Each kept epoch is ``epoch_<N>.ckpt`` (weights as best.ckpt holds them: averaged with EMA, BatchNorm statistics
included; run state; model metadata). A new file is written atomically first, then the kept set in
``checkpoints.json`` (atomically), and only then are the files that fell out of the set deleted, so a killed
run never loses a file the set still names. ``--resume`` reads the set back and continues the same policy.
"""
from __future__ import annotations

import logging
import os

from ..runfiles import KEPT_FILE, epoch_checkpoint_name, epoch_checkpoints

__all__ = ["CheckpointSaver"]

log = logging.getLogger("mindshuffle")


class CheckpointSaver:
    """The kept per-epoch checkpoints of one run folder (rank 0). ``kept``: [{"epoch", "val_top1", "file"}] in
    epoch order."""

    def __init__(self, folder, policy: str, k: int, interval: int = 1):
        self.folder, self.policy, self.k, self.interval = folder, policy, int(k), int(interval)
        self.kept: list = []

    @property
    def active(self) -> bool:
        return self.k > 1

    def select(self, entries: list) -> list:
        """The entries the policy keeps, in epoch order."""
        if self.policy == "top_k":
            ranked = sorted((e for e in entries if e["val_top1"] is not None),
                            key=lambda e: (e["val_top1"], e["epoch"]), reverse=True)
        else:
            ranked = sorted(entries, key=lambda e: e["epoch"], reverse=True)
        return sorted(ranked[:self.k], key=lambda e: e["epoch"])

    def save(self, epoch: int, val_top1, final: bool, write) -> bool:
        """After epoch ``epoch`` (val top-1 ``val_top1`` or None): if the policy keeps it, ``write(path)`` it
        (atomically), record the new set, then delete what fell out. True if the epoch was written."""
        if not self.active or (epoch % self.interval and not final):
            return False
        entry = {"epoch": int(epoch), "val_top1": None if val_top1 is None else float(val_top1),
                 "file": epoch_checkpoint_name(epoch)}
        keep = self.select([e for e in self.kept if e["epoch"] != epoch] + [entry])
        if entry not in keep:
            return False
        write(self.folder.file(entry["file"]))
        self._commit(keep)
        return True

    def resume(self, history: list, done_epoch: int) -> None:
        """Continue the policy of a resumed run: the recorded set (files that exist, epochs up to the resumed
        one), plus any epoch file written but not yet recorded when the run was killed (its val top-1 from
        metrics.csv ``history``); files of epochs after ``done_epoch`` are redone, so removed."""
        if not self.active:
            return
        val = {int(r["epoch"]): r.get("val_top1") for r in history}
        recorded = self._read()
        entries = [e for e in recorded if e["epoch"] <= done_epoch and os.path.isfile(self.folder.file(e["file"]))]
        listed = {e["epoch"] for e in entries}
        for epoch, path in epoch_checkpoints(self.folder.path).items():
            if epoch <= done_epoch and epoch not in listed:
                entries.append({"epoch": epoch, "val_top1": val.get(epoch), "file": os.path.basename(path)})
        self.kept = sorted(entries, key=lambda e: e["epoch"])
        self._commit(self.select(self.kept), extra=[p for e, p in epoch_checkpoints(self.folder.path).items()
                                                     if e > done_epoch])
        log.info("resumed %s k=%d: keeping %s", self.policy, self.k,
                 ", ".join(e["file"] for e in self.kept) or "no epoch checkpoint yet")

    def _commit(self, keep: list, extra=()) -> None:
        """Record ``keep`` (atomically), then delete the files that are no longer in it (and ``extra``)."""
        self.folder.write_json(KEPT_FILE, {"ckpt_save_policy": self.policy, "keep_checkpoint_max": self.k,
                                           "ckpt_save_interval": self.interval, "kept": keep})
        names = {e["file"] for e in keep}
        gone = [self.folder.file(e["file"]) for e in self.kept if e["file"] not in names] + list(extra)
        self.kept = keep
        for path in gone:
            if os.path.isfile(path):
                os.remove(path)

    def _read(self) -> list:
        if not os.path.isfile(self.folder.file(KEPT_FILE)):
            return []
        kept = self.folder.read_json(KEPT_FILE).get("kept", [])
        return [{"epoch": int(e["epoch"]), "val_top1": e.get("val_top1"), "file": str(e["file"])} for e in kept]
