"""Names of the data fields legato adds to nequip's (registered once on import), and the dipole they give.

Units: ``wannier_disp`` Angstrom (per atom: centroid of the atom's MLWF centres
minus the atom's position), ``wannier_count`` number of doubly occupied centres
owned by the atom, ``valence_charge`` pseudopotential valence charge (e),
``dipole`` e*Angstrom, ``molecule_index`` the atom's molecule within its frame
(0-based; added on loading when a loss term needs it).
"""

from nequip.data import register_fields

WANNIER_DISP = "wannier_disp"
WANNIER_COUNT = "wannier_count"
VALENCE_CHARGE = "valence_charge"
MOLECULE_INDEX = "molecule_index"
#: frame dipole in the extxyz info. nequip registers "dipole" as a per-atom
#: field, so loaders hand it to nequip under exclude_keys.
DIPOLE = "dipole"

register_fields(
    node_fields=[WANNIER_DISP, WANNIER_COUNT, VALENCE_CHARGE, MOLECULE_INDEX],
    long_fields=[WANNIER_COUNT, VALENCE_CHARGE, MOLECULE_INDEX],
)


def dipole_from_wannier(positions, valence_charge, wannier_count, wannier_disp):
    """Cell dipole (e*Angstrom): ions at +Z_val, two electrons at each centre.

    mu = sum_i Z_i r_i - 2 sum_i n_i (r_i + d_i). Works on numpy or torch arrays,
    with a leading batch axis or without.
    """
    z = valence_charge[..., None] * 1.0
    n = wannier_count[..., None] * 1.0
    return (z * positions - 2.0 * n * (positions + wannier_disp)).sum(-2)
