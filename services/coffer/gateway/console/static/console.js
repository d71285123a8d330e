// Coffer console: small progressive enhancements only; every page works without this file.
// Loaded as an external file (the Content-Security-Policy allows no inline script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // After a change, move focus to the message that says what happened (screen readers announce it too).
  var note = document.getElementById("flash") || document.getElementById("error");
  if (note) {
    note.setAttribute("tabindex", "-1");
    note.focus();
  }
  // A revealed value: focus it, so it can be selected and copied with the keyboard.
  var value = document.getElementById("secret-value");
  if (value && !note) {
    value.focus();
  }
});
