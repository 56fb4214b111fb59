{{ anchor }}                container: $("#cowmem-legend"),
