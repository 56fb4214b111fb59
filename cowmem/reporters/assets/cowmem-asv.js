'use strict';
/* cowmem's changes to asv's graph page (graphdisplay.js calls these).

   asv selects every environment by default, so a suite run in 11
   environments opens each graph with 11 times as many series as it has
   parameter curves.  When the URL names no environment parameter, select
   one environment instead: the newest (highest python version, then the
   highest versions of the other parameters).  Parameters the URL names are
   kept; the others are narrowed to the newest environment that matches them. */
var cowmemAsv = (function () {
    function versionKey(text) {
        return String(text === null ? '' : text).split(/[.\-_+]/).map(function (part) {
            return /^\d+$/.test(part) ? [0, parseInt(part, 10), ''] : [1, 0, part];
        });
    }

    function compareKeys(a, b) {
        for (var i = 0; i < Math.max(a.length, b.length); ++i) {
            if (a[i] === undefined) return -1;
            if (b[i] === undefined) return 1;
            for (var j = 0; j < 3; ++j) {
                if (a[i][j] < b[i][j]) return -1;
                if (a[i][j] > b[i][j]) return 1;
            }
        }
        return 0;
    }

    /* Newer first: python, then every other parameter in name order. */
    function compareEnvironments(order, a, b) {
        for (var i = 0; i < order.length; ++i) {
            var c = compareKeys(versionKey(b[order[i]]), versionKey(a[order[i]]));
            if (c !== 0) return c;
        }
        return 0;
    }

    function defaultEnvironment(index, state, selection) {
        var named = Object.keys(index.params).filter(function (param) {
            return param !== 'branch' && selection && selection[param] !== undefined;
        });
        var candidates = index.graph_param_list.filter(function (params) {
            return named.every(function (param) {
                return selection[param].indexOf(params[param]) !== -1;
            }) && (state.branch === undefined || state.branch.indexOf(params.branch) !== -1);
        });
        if (!candidates.length) return;
        var order = ['python'].concat(Object.keys(index.params).filter(function (param) {
            return param !== 'python' && param !== 'branch';
        }).sort());
        candidates.sort(function (a, b) { return compareEnvironments(order, a, b); });
        $.each(index.params, function (param) {
            if (param !== 'branch' && named.indexOf(param) === -1) {
                state[param] = [candidates[0][param]];
            }
        });
    }

    return {defaultEnvironment: defaultEnvironment};
})();
