// Sign-in helper: a token passed in the URL fragment (#token=..., never sent to the server),
// as printed by `make demo`, is put in the form; the fragment is removed from the address bar.
// The form is not submitted automatically: signing in stays a deliberate click.
(function () {
  'use strict';
  var m = /^#token=([A-Za-z0-9._~-]+)$/.exec(window.location.hash);
  if (!m) { return; }
  history.replaceState(null, '', window.location.pathname + window.location.search);
  document.getElementById('token').value = m[1];
  var b = document.querySelector('#login-form button[type=submit]');
  if (b) { b.focus(); }
})();
