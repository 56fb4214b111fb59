'use strict';
/* The upgrade page: FROM and TO selectors in the URL hash
   (#from=python=3.12&to=python=3.13), the rows that changed, the exact
   versions of both sides.  The rules are in selection.js. */
(function () {
    var data = window.COWMEM_DATA;

    function el(tag, attrs, children) {
        var node = document.createElement(tag);
        Object.keys(attrs || {}).forEach(function (k) {
            if (k === 'text') node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]);
        });
        (children || []).forEach(function (c) { node.appendChild(c); });
        return node;
    }

    function parseHash() {
        var out = {};
        location.hash.replace(/^#/, '').split('&').forEach(function (part) {
            var at = part.indexOf('=');
            if (at > 0) out[decodeURIComponent(part.slice(0, at))] = decodeURIComponent(part.slice(at + 1));
        });
        return out;
    }

    function format(v) {
        if (v === null) return 'failed';
        if (v === '-' || v === 'n/a') return v;
        if (v === 0) return '0';
        return Math.abs(v) >= 10 ? v.toFixed(1) : String(Number(v.toPrecision(3)));
    }

    function causes(run, row) {
        var pair = row.params.data + ' x ' + row.params.access;
        var found = run.causes[pair];
        if (!found) return 'not explained';
        var names = Object.keys(found).sort(function (a, b) { return found[b] - found[a]; });
        if (!names.length) return 'no copies';
        return names.map(function (n) { return n + ' ' + format(found[n]) + ' MiB'; }).join(', ');
    }

    function versionsTable(a, b) {
        var body = a.versions.map(function (pair, i) {
            var other = b.versions[i][1];
            return el('tr', {class: pair[1] === other ? '' : 'differs'}, [
                el('th', {text: pair[0]}), el('td', {text: pair[1]}), el('td', {text: other})]);
        });
        return el('table', {class: 'versions'}, [
            el('thead', {}, [el('tr', {}, [el('th'), el('th', {text: a.label + ' (' + a.machine + ')'}),
                                           el('th', {text: b.label + ' (' + b.machine + ')'})])]),
            el('tbody', {}, body)]);
    }

    function rowsTable(result) {
        var params = [];
        result.rows.forEach(function (row) {
            Object.keys(row.params).forEach(function (p) { if (params.indexOf(p) === -1) params.push(p); });
        });
        var head = ['#', 'change'].concat(params, ['from', 'to', 'copied MiB (data)',
            'bytes per element', 'copied MiB (whole child)', 'first writes, from', 'first writes, to']);
        var body = result.rows.map(function (row, i) {
            var shown = cowmemSelection.shown(data, row);
            function both(metric) {
                var v = shown[metric];
                return el('td', {class: 'num', text: v ? format(v[0]) + ' \u2192 ' + format(v[1]) : '-'});
            }
            var kinds = row.changes.map(function (c) { return c.kind; })
                .filter(function (k, j, all) { return all.indexOf(k) === j; }).join(', ');
            var tr = el('tr', {class: 'row', 'data-params': row.text,
                               'data-from': row.old.env, 'data-to': row.new.env}, [
                el('td', {text: String(i + 1)}), el('td', {class: kinds, text: kinds})]
                .concat(params.map(function (p) { return el('td', {text: row.params[p] || ''}); }))
                .concat([el('td', {text: row.old.label}), el('td', {text: row.new.label}),
                         both('track_data_mib'), both('track_bytes_per_element'), both('track_child_mib'),
                         el('td', {text: causes(row.old, row)}), el('td', {text: causes(row.new, row)})]));
            return tr;
        });
        return el('table', {class: 'changes', id: 'changes'}, [
            el('thead', {}, [el('tr', {}, head.map(function (h) { return el('th', {text: h}); }))]),
            el('tbody', {}, body)]);
    }

    function show() {
        var hash = parseHash();
        var out = document.getElementById('result');
        out.textContent = '';
        document.getElementById('from').value = hash.from || '';
        document.getElementById('to').value = hash.to || '';
        if (!hash.from || !hash.to) {
            out.appendChild(el('p', {text: 'Choose a FROM and a TO side, or one of the examples.'}));
            out.setAttribute('data-state', 'empty');
            return;
        }
        var result;
        try {
            result = cowmemSelection.compare(data, hash.from, hash.to);
        } catch (e) {
            if (!(e instanceof cowmemSelection.SelectorError)) throw e;
            out.appendChild(el('p', {class: 'error', text: e.message}));
            out.setAttribute('data-state', 'error');
            return;
        }
        var counts = {grew: 0, shrank: 0, failed: 0};
        result.rows.forEach(function (r) { r.changes.forEach(function (c) { counts[c.kind] += 1; }); });
        out.appendChild(el('p', {id: 'summary', text:
            hash.from + ' \u2192 ' + hash.to + ': changed ' + (result.pairing.changed.join(', ') || 'nothing') +
            '; paired on ' + (result.pairing.pairedOn.join(', ') || 'nothing') + '. ' +
            result.compared + ' combinations compared: ' + result.rows.length + ' changed (' +
            counts.grew + ' grew, ' + counts.shrank + ' shrank, ' + counts.failed + ' failed).'}));
        out.appendChild(el('h2', {text: 'What changed, largest change first'}));
        out.appendChild(result.rows.length ? rowsTable(result)
            : el('p', {id: 'nothing', text: 'No combination changed beyond the thresholds and both sides\u2019 spread.'}));
        out.appendChild(el('h2', {text: 'Exact versions of each pair'}));
        result.pairing.pairs.forEach(function (p, i) {
            var section = el('section', {class: 'pair', 'data-from': p[0].env, 'data-to': p[1].env}, [
                el('h3', {text: (i + 1) + '. ' + p[0].label + ' \u2192 ' + p[1].label + ' on ' + p[1].machine +
                          ' at ' + p[1].commit.slice(0, 8)}), versionsTable(p[0], p[1])]);
            out.appendChild(section);
        });
        if (result.pairing.unpaired.length) {
            out.appendChild(el('p', {id: 'unpaired', text: 'No counterpart on the other side: ' +
                result.pairing.unpaired.map(function (r) { return r.label + ' (' + r.machine + ')'; }).join(', ')}));
        }
        out.setAttribute('data-state', 'done');
    }

    document.getElementById('sides').addEventListener('submit', function (event) {
        event.preventDefault();
        location.hash = 'from=' + encodeURIComponent(document.getElementById('from').value.trim()) +
            '&to=' + encodeURIComponent(document.getElementById('to').value.trim());
    });
    var suggestions = document.getElementById('selectors');
    var seen = {};
    data.runs.forEach(function (run) {
        Object.keys(run.fields).forEach(function (key) {
            var value = key === 'commit' ? run.fields[key].slice(0, 8) : run.fields[key];
            var option = key + '=' + value;
            if (value && !seen[option]) { seen[option] = true; suggestions.appendChild(el('option', {value: option})); }
        });
    });
    window.addEventListener('hashchange', show);
    show();
})();
