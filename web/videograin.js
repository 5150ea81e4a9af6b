// Shows the pack's warnings (server event "videograin.warning") as toasts in the ComfyUI frontend.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

app.registerExtension({
    name: "videograin.warnings",
    setup() {
        api.addEventListener("videograin.warning", (event) => {
            const { node, message } = event.detail || {};
            const toast = app.extensionManager?.toast;
            if (toast?.add) {
                toast.add({ severity: "warn", summary: `VideoGrain: ${node}`, detail: message, life: 12000 });
            } else {
                console.warn(`VideoGrain: ${node}: ${message}`);
            }
        });
    },
});
