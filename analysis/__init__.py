"""Reading results: IR and INS spectra of i-PI runs, the NQE comparison, time to failure, sharpness, orientational order."""
