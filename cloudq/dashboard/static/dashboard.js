// cloudq dashboard: the queues table refreshes itself; the purge button waits for its typed confirmation.
// Served by the dashboard itself (the Content-Security-Policy allows no other script and no inline one).
"use strict";

function refreshLoop(el) {
  const url = el.dataset.refresh;
  const interval = Math.max(1000, parseInt(el.dataset.interval || "5000", 10));
  const stamp = document.querySelector("[data-refreshed]");
  async function tick() {
    if (!document.hidden) {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (response.ok) {
          // The fragment is the server's own escaped HTML (the same template as the first render).
          el.innerHTML = await response.text();
          if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
        } else if (stamp) {
          stamp.textContent = "refresh failed: HTTP " + response.status;
        }
      } catch (err) {
        if (stamp) stamp.textContent = "refresh failed: " + err;
      }
    }
    setTimeout(tick, interval);
  }
  setTimeout(tick, interval);
}

function guardPurge(form) {
  const expected = form.dataset.confirm;
  const input = form.querySelector("input[name=confirm]");
  const button = form.querySelector("button[type=submit]");
  const update = () => { button.disabled = input.value !== expected; };
  input.addEventListener("input", update);
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshLoop);
  document.querySelectorAll("form[data-confirm]").forEach(guardPurge);
});
