'use strict';
/* The upgrade page's rules: selectors, pairing, thresholds and spread.

   The same rules as cowmem.report.selectors and cowmem.report.gate, on the
   data publish writes to cowmem-data.js (tests/test_site.py checks that both
   give the same rows on real results):

   - a side is comma-separated terms: key=value (python, machine, commit, a
     requirement or variable; a version matches itself and its longer
     releases; commit= takes 8+ characters of the hash), or an environment
     name or prefix; a side without commit= is taken at the default commit (publish's --commit, else the newest);
   - a dimension no value of one side is compatible with any of the other's
     is what changed; runs are paired on every other dimension;
   - a combination is one benchmark class's parameter values in one pair,
     its values those of each benchmark of the class; a value changed when
     the difference exceeds both thresholds and each side's value lies
     outside the other side's spread, or when it failed on the new side;
   - a changed combination is a row of one kind: failed when any value
     failed, else grew when any grew, else shrank; rows are sorted failures
     first, then by the largest change inside the data (track_data_mib), then in
     any MiB, then in other units. */
var cowmemSelection = (function () {
    var MIN_COMMIT_PREFIX = 8;

    function versionMatches(actual, wanted) {
        return actual !== undefined && actual !== null &&
            (actual === wanted || actual.indexOf(wanted + '.') === 0);
    }

    function compatible(one, other) {
        return versionMatches(one, other) || versionMatches(other, one);
    }

    function SelectorError(message) { this.message = message; }

    function select(data, selector) {
        var terms = selector.split(',').map(function (t) { return t.trim(); })
            .filter(function (t) { return t; });
        if (!terms.length) throw new SelectorError('empty selector');
        var runs = data.runs.slice();
        var dimensions = {};
        runs.forEach(function (run) { Object.keys(run.fields).forEach(function (k) { dimensions[k] = true; }); });
        var namedCommit = false;
        terms.forEach(function (term) {
            var at = term.indexOf('=');
            if (at === -1) {
                var exact = runs.filter(function (run) { return run.env === term; });
                runs = exact.length ? exact : runs.filter(function (run) { return run.env.indexOf(term) === 0; });
                return;
            }
            var key = term.slice(0, at).trim(), value = term.slice(at + 1).trim();
            if (!dimensions[key]) {
                throw new SelectorError('bad term ' + term + ': use key=value with key one of ' +
                                        Object.keys(dimensions).sort().join(', ') +
                                        ', or an environment name or prefix');
            }
            if (key === 'commit') {
                namedCommit = true;
                if (value.length < MIN_COMMIT_PREFIX) {
                    throw new SelectorError('commit=' + value + ': give at least ' +
                                            MIN_COMMIT_PREFIX + ' characters of the hash');
                }
                runs = runs.filter(function (run) { return run.commit.indexOf(value.toLowerCase()) === 0; });
            } else {
                runs = runs.filter(function (run) { return versionMatches(run.fields[key], value); });
            }
        });
        if (!namedCommit) {
            runs = runs.filter(function (run) { return run.commit === data.default_commit; });
        }
        if (!runs.length) {
            var names = data.runs.map(function (run) { return run.env + ' on ' + run.machine; })
                .filter(function (name, i, all) { return all.indexOf(name) === i; });
            throw new SelectorError('no environment matches ' + selector +
                                    (namedCommit ? '' : ' at commit ' + data.default_commit.slice(0, 8)) +
                                    '; environments: ' + names.join(', '));
        }
        return runs;
    }

    function pair(oldRuns, newRuns) {
        var keys = {};
        oldRuns.concat(newRuns).forEach(function (run) {
            Object.keys(run.fields).forEach(function (k) { keys[k] = true; });
        });
        var dimensions = Object.keys(keys).sort();
        function value(run, key) { return run.fields[key] === undefined ? '' : run.fields[key]; }
        var changed = dimensions.filter(function (key) {
            return !oldRuns.some(function (a) {
                return newRuns.some(function (b) { return compatible(value(a, key), value(b, key)); });
            });
        });
        var pairedOn = dimensions.filter(function (key) { return changed.indexOf(key) === -1; });
        var pairs = [];
        oldRuns.forEach(function (a) {
            newRuns.forEach(function (b) {
                if (a !== b && pairedOn.every(function (key) { return compatible(value(a, key), value(b, key)); })) {
                    pairs.push([a, b]);
                }
            });
        });
        var inPairs = pairs.reduce(function (acc, p) { return acc.concat(p); }, []);
        var unpaired = oldRuns.concat(newRuns).filter(function (run) { return inPairs.indexOf(run) === -1; });
        return {changed: changed, pairedOn: pairedOn, pairs: pairs, unpaired: unpaired};
    }

    function isMeasured(v) { return typeof v === 'number'; }

    function within(v, spread) { return spread !== null && spread !== undefined && spread[0] <= v && v <= spread[1]; }

    function changeKind(oldValue, newValue, oldSpread, newSpread, thresholds) {
        if (newValue === null) return oldValue !== null ? 'failed' : null;
        if (!(isMeasured(oldValue) && isMeasured(newValue))) return null;
        var delta = Math.abs(newValue - oldValue);
        if (!(delta > thresholds.min_abs && delta > thresholds.min_rel * Math.abs(oldValue))) return null;
        if (within(newValue, oldSpread) || within(oldValue, newSpread)) return null;
        return newValue > oldValue ? 'grew' : 'shrank';
    }

    function group(name) { return name.slice(0, name.lastIndexOf('.')); }

    function sortKey(row) {
        var failed = false, data = 0, mib = 0, other = 0;
        row.changes.forEach(function (c) {
            if (c.kind === 'failed') { failed = true; return; }
            var d = Math.abs(c.new - c.old);
            if (c.benchmark.slice(c.benchmark.lastIndexOf('.') + 1) === 'track_data_mib') data = Math.max(data, d);
            if (c.unit === 'MiB') mib = Math.max(mib, d); else other = Math.max(other, d);
        });
        return [failed ? 0 : 1, -data, -mib, -other];
    }

    function rowKind(row) {
        var kinds = row.changes.map(function (c) { return c.kind; });
        return ['failed', 'grew', 'shrank'].filter(function (k) { return kinds.indexOf(k) !== -1; })[0];
    }

    function compareKeys(a, b) {
        for (var i = 0; i < a.length; ++i) {
            if (a[i] < b[i]) return -1;
            if (a[i] > b[i]) return 1;
        }
        return 0;
    }

    /* The rows whose copies changed from the old side to the new, largest first. */
    function compare(data, oldSelector, newSelector) {
        var oldRuns = select(data, oldSelector), newRuns = select(data, newSelector);
        var pairing = pair(oldRuns, newRuns);
        if (!pairing.pairs.length) {
            var same = oldRuns.length === newRuns.length &&
                oldRuns.every(function (run) { return newRuns.indexOf(run) !== -1; });
            throw new SelectorError(same ? oldSelector + ' and ' + newSelector +
                                    ' select the same environments: nothing to compare'
                : 'no environment of ' + oldSelector + ' has a counterpart in ' + newSelector +
                  ' (paired on ' + (pairing.pairedOn.join(', ') || 'nothing') + ')');
        }
        var names = Object.keys(data.benchmarks).sort();
        var rows = [], compared = 0, values = 0;
        pairing.pairs.forEach(function (p) {
            var a = p[0], b = p[1], grouped = {}, order = [], combinations = {};
            names.forEach(function (name) {
                var bench = data.benchmarks[name];
                bench.combinations.forEach(function (combination, i) {
                    var before = a.values[name][i], after = b.values[name][i];
                    if (before === '-' || after === '-') return;
                    var key = group(name) + '\u0000' + combination.join('\u0000');
                    values += 1;
                    combinations[key] = true;
                    var kind = changeKind(before, after, a.spreads[name][i], b.spreads[name][i], data.thresholds);
                    if (!kind) return;
                    if (!grouped[key]) {
                        grouped[key] = {old: a, new: b, group: group(name), params: bench.labels[i],
                                        text: bench.texts[i], combination: combination, changes: []};
                        order.push(key);
                    }
                    grouped[key].changes.push({kind: kind, benchmark: name, unit: bench.unit,
                                               old: before, new: after});
                });
            });
            compared += Object.keys(combinations).length;
            order.forEach(function (key) { rows.push(grouped[key]); });
        });
        var keyed = rows.map(function (row, i) { return [sortKey(row), i, row]; });
        keyed.sort(function (x, y) { return compareKeys(x[0], y[0]) || x[1] - y[1]; });
        rows = keyed.map(function (k) { return k[2]; });
        var counts = {grew: 0, shrank: 0, failed: 0};
        rows.forEach(function (row) { row.kind = rowKind(row); counts[row.kind] += 1; });
        return {pairing: pairing, compared: compared, values: values, counts: counts, rows: rows};
    }

    /* Every copy metric of the row's combination on both sides: method -> [old, new]. */
    function shown(data, row) {
        var out = {};
        Object.keys(data.benchmarks).forEach(function (name) {
            if (group(name) !== row.group) return;
            var bench = data.benchmarks[name];
            var i = bench.combinations.findIndex(function (c) { return c.join('\u0000') === row.combination.join('\u0000'); });
            if (i !== -1 && row.old.values[name][i] !== '-' && row.new.values[name][i] !== '-') {
                out[bench.method] = [row.old.values[name][i], row.new.values[name][i]];
            }
        });
        return out;
    }

    return {select: select, pair: pair, compare: compare, shown: shown, SelectorError: SelectorError};
})();
