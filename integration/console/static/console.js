// The console's only script, and every page works without it: a copy button (the URL field
// can be selected by hand), and the live view's polling (without it, the page reloads itself).
"use strict";

function copyFrom(button) {
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 2000); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => { field.select(); });
  } else {
    field.select();
    if (document.execCommand("copy")) done();
  }
}

function poll(target) {
  const every = Math.max(1, Number(target.dataset.every || 2)) * 1000;
  const load = async () => {
    if (!document.hidden) {
      try {
        const response = await fetch(target.dataset.poll, { credentials: "same-origin", cache: "no-store" });
        if (response.redirected) {
          // The session ended (expired, or signed out elsewhere): show the sign-in page.
          window.location.reload();
          return;
        }
        if (response.ok && (response.headers.get("content-type") || "").startsWith("text/html")) {
          // Our own server-rendered, escaped rows (a fragment of the same template).
          target.innerHTML = await response.text();
        }
      } catch (_) { /* the next poll tries again */ }
    }
    setTimeout(load, every);
  };
  setTimeout(load, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-copy]").forEach((b) => b.addEventListener("click", () => copyFrom(b)));
  document.querySelectorAll("[data-poll]").forEach(poll);
});
