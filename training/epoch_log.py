"""One line per training epoch on stdout, so a run in the background (``--no-progress``,
output to a log file) says how far it is and how well it fits."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback

from legato.timing import time_to_go

#: validation metrics nequip logs (eV/A, eV/atom, A) and how the line shows them
SHOWN = (
    ("val0_epoch/forces_mae", "forces", 1e3, "{:.1f} meV/A"),
    ("val0_epoch/per_atom_energy_mae", "energy", 1e3, "{:.2f} meV/atom"),
    ("val0_epoch/wannier_disp_mae", "wannier", 1.0, "{:.4f} A"),
)


class EpochLog(Callback):
    """Prints ``epoch N/MAX: validation MAE forces .. energy .. wannier ..; lr ..; .. s; .. to go``,
    ending in ``; best`` when the epoch improves the monitored metric (a new best.ckpt).
    The time to go is the mean epoch time of this process times the epochs left."""

    def __init__(self):
        self._started = time.perf_counter()
        self._seconds = []  # wall time of each epoch this process trained

    def on_train_epoch_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        shown = [f"{label} {fmt.format(scale * float(metrics[key]))}" for key, label, scale, fmt in SHOWN if key in metrics]
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self._seconds.append(time.perf_counter() - self._started)
        epoch = trainer.current_epoch + 1
        line = f"epoch {epoch}/{trainer.max_epochs}: validation MAE {', '.join(shown)}; lr {lr:.2g}; {self._seconds[-1]:.0f} s"
        if epoch < trainer.max_epochs:
            line += f"; {time_to_go(sum(self._seconds), len(self._seconds), trainer.max_epochs - epoch)}"
        if self._is_best(trainer, metrics):
            line += "; best"
        bar = trainer.progress_bar_callback
        if bar is None:
            print(line, flush=True)  # flushed: a background run's log shows each epoch as it ends
        else:
            bar.print(line)  # above the active bar instead of through it

    @staticmethod
    def _is_best(trainer, metrics) -> bool:
        """Is this epoch's monitored metric the lowest so far? Lightning runs checkpoint
        callbacks last, so the best score may still be the previous epochs' (hence <=)."""
        checkpoint = trainer.checkpoint_callback  # the first ModelCheckpoint: the one that keeps best.ckpt
        if checkpoint is None or checkpoint.monitor not in metrics:
            return False
        best = checkpoint.best_model_score
        return best is None or float(metrics[checkpoint.monitor]) <= float(best)
