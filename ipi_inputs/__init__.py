"""i-PI input templates and their structures, shipped with legato as ``legato.ipi_inputs`` (see legato.shipped)."""
