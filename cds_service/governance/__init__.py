"""Alert governance (issue 19): the values each patient-view call computed, the what-if simulator over them,
and the committee's dashboard at ``/admin/dashboard``."""
