"""Analysis cost vs dynasor on the same work, as a ratio from one run.

    python bench/bench_analysis.py [--beads 32 --steps 20000 --atoms 64]

Work: velocity autocorrelation averaged over beads, atoms and components, and
its spectrum. legato: one FFT per bead over all (atom, component) series;
dynasor: ``dynasor.tools.acfs.compute_acf`` per series, then ``psd_from_acf``.
"""

import argparse
import time

import numpy as np

from legato.analysis.correlation import autocorrelation, spectrum


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--atoms", type=int, default=64)
    args = parser.parse_args()
    from dynasor.tools.acfs import compute_acf, psd_from_acf

    rng = np.random.default_rng(0)
    velocities = rng.normal(size=(args.beads, args.steps, args.atoms, 3)).astype(np.float64)

    start = time.perf_counter()
    ours = np.mean([autocorrelation(velocities[b]) for b in range(args.beads)], axis=0)
    spectrum(ours, 1.0, window=None, max_lag=len(ours))
    t_ours = time.perf_counter() - start

    start = time.perf_counter()
    total = np.zeros(args.steps)
    for b in range(args.beads):
        for a in range(args.atoms):
            for k in range(3):
                series = velocities[b, :, a, k]
                total += compute_acf(series, 1.0)[1] * np.mean(series**2)
    theirs = total / (args.beads * args.atoms * 3)
    psd_from_acf(theirs, 1.0)
    t_dynasor = time.perf_counter() - start

    assert np.allclose(ours, theirs, atol=1e-8), "the two ACFs differ"
    print(f"{args.beads} beads x {args.steps} steps x {args.atoms} atoms: legato / dynasor time = {t_ours / t_dynasor:.3f}  (goal <= 2)  [{t_ours:.2f} s / {t_dynasor:.2f} s]")


if __name__ == "__main__":
    main()
