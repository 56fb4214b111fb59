/* The copy metrics of the published results, for the upgrade page (written by cowmem publish). */
window.COWMEM_DATA = {{ data }};
