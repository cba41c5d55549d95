// Keeps the runs on an admin page up to date: polls the JSON endpoint every few seconds and
// updates each cell marked data-bf-run / data-bf-field. Plain JavaScript, no dependencies.
"use strict";
(function () {
  const POLL_MS = 3000;

  function autosubmit() {
    document.querySelectorAll("[data-bf-autosubmit]").forEach((select) => {
      select.addEventListener("change", () => select.form.submit());
    });
  }

  function runIds() {
    const ids = new Set();
    document.querySelectorAll("[data-bf-run]").forEach((el) => ids.add(el.dataset.bfRun));
    return Array.from(ids);
  }

  function update(run) {
    document.querySelectorAll(`[data-bf-run="${run.id}"]`).forEach((el) => {
      switch (el.dataset.bfField) {
        case "status":
          el.textContent = run.status_label;
          el.className = `bf-badge bf-${run.status}`;
          break;
        case "progress": {
          const percent = run.percent === null ? 0 : run.percent;
          el.querySelector(".bf-progress-bar").style.width = `${percent}%`;
          el.querySelector(".bf-progress-label").textContent =
            run.percent === null ? "?" : `${run.percent.toFixed(1)}%`;
          el.setAttribute("aria-valuenow", percent);
          break;
        }
        case "heartbeat":
          el.textContent = run.heartbeat;
          el.classList.toggle("bf-stale", run.stale);
          break;
        default:
          if (el.dataset.bfField in run) el.textContent = run[el.dataset.bfField];
      }
    });
  }

  async function poll(live) {
    const ids = runIds();
    if (!ids.length) return false;
    const response = await fetch(`${live.dataset.url}?ids=${ids.join(",")}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!response.ok) return true;
    const runs = Object.values((await response.json()).runs);
    runs.forEach(update);
    // A run's page shows buttons for its status: reload when the status changes.
    const shown = live.dataset.reloadOnStatus;
    if (shown && runs.length === 1 && runs[0].status !== shown) {
      window.location.reload();
      return false;
    }
    return runs.some((run) => run.active);
  }

  function start() {
    autosubmit();
    const live = document.getElementById("bf-live");
    if (!live) return;
    const tick = async () => {
      let again = true;
      try {
        again = await poll(live);
      } catch (error) {
        again = true; // a network blip: try again next time
      }
      if (again) window.setTimeout(tick, POLL_MS);
    };
    window.setTimeout(tick, POLL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
