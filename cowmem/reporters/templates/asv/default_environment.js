        cowmemAsv.defaultEnvironment(index, state, state_selection);
{{ anchor }}
