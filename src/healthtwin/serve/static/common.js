// healthtwin dashboard: shared helpers (API calls, DOM, charts). No eval, no inline code.
(function () {
  'use strict';
  var HT = window.healthtwin = window.healthtwin || {};
  HT.charts = HT.charts || {};

  // Call the REST API with the session cookie. Bodies are JSON; unsafe methods carry the
  // X-Healthtwin-UI header, without which the server does not accept the cookie for them.
  HT.api = function (path, method, body) {
    var opts = { method: method || 'GET', credentials: 'same-origin',
                 headers: { 'Accept': 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.headers['X-Healthtwin-UI'] = '1';
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!r.ok) {
          var d = data && data.detail !== undefined ? data.detail : r.statusText;
          var err = new Error(r.status + ': ' + (typeof d === 'string' ? d : JSON.stringify(d)));
          err.status = r.status;
          err.retryAfter = r.headers.get('Retry-After');
          throw err;
        }
        return data;
      });
    });
  };

  // Build an element: HT.el('td', {class: 'num'}, 'text', childNode, ...). Text is never HTML.
  HT.el = function (tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] !== null && attrs[k] !== undefined) { e.setAttribute(k, attrs[k]); }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) { continue; }
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  };

  HT.clear = function (node) { while (node.firstChild) { node.removeChild(node.firstChild); } };

  HT.num = function (x, digits) {
    if (x === null || x === undefined || !isFinite(x)) { return '—'; }
    var d = digits === undefined ? 4 : digits;
    var s = Number(x).toPrecision(d);
    if (s.indexOf('e') < 0 && s.indexOf('.') >= 0) { s = s.replace(/0+$/, '').replace(/\.$/, ''); }
    return s;
  };

  HT.secs = function (iso) { return Date.parse(iso) / 1000; };
  HT.utc = function (iso) {
    if (!iso) { return '—'; }
    return new Date(iso).toISOString().slice(0, 16).replace('T', ' ');
  };

  // A definition list of provenance: [[label, value], ...]
  HT.meta = function (node, pairs) {
    HT.clear(node);
    var dl = HT.el('dl');
    pairs.forEach(function (p) {
      dl.appendChild(HT.el('dt', null, p[0]));
      dl.appendChild(HT.el('dd', null, p[1] === null || p[1] === undefined ? '—' : String(p[1])));
    });
    node.appendChild(dl);
  };

  HT.error = function (node, err) {
    HT.clear(node);
    var msg = err && err.message ? err.message : String(err);
    if (err && err.status === 429 && err.retryAfter) { msg += ' (retry in ' + err.retryAfter + ' s)'; }
    node.appendChild(HT.el('p', { 'class': 'error', role: 'alert' }, msg));
  };

  HT.utcDate = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'); };

  // A UTC time axis with 24-h labels: HH:MM within a day, MM-DD HH:MM within a month, else dates.
  HT.timeAxis = function () {
    return {
      space: 70,
      values: function (u, splits) {
        var span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
        return splits.map(function (s) {
          var iso = new Date(s * 1000).toISOString();
          if (span <= 86400) { return iso.slice(11, 16); }
          if (span <= 31 * 86400) { return iso.slice(5, 10) + ' ' + iso.slice(11, 16); }
          return iso.slice(0, 10);
        });
      }
    };
  };

  // (Re)draw a uPlot chart in the element with id `id`; kept in HT.charts[id] for tests.
  HT.chart = function (id, opts, data) {
    var host = document.getElementById(id);
    if (HT.charts[id]) { HT.charts[id].destroy(); delete HT.charts[id]; }
    HT.clear(host);
    var o = Object.assign({ width: Math.max(320, Math.min(host.clientWidth || 900, 1100)),
                            height: 280 }, opts);
    var u = new uPlot(o, data, host);
    HT.charts[id] = u;
    return u;
  };

  HT.colors = { data: '#0b4f9c', median: '#6a1b9a', band: 'rgba(106, 27, 154, 0.18)',
                bandLine: '#9c64b4' };
})();
