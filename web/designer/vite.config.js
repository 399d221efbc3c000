import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Built into the Host's wwwroot; `pipelines serve` serves it at /. `npm run dev` proxies the API to a local server.
export default defineConfig({
  plugins: [react()],
  base: '/',
  build: { outDir: '../../src/Host/wwwroot', emptyOutDir: true, chunkSizeWarningLimit: 2000 },
  server: { proxy: { '/api': 'http://127.0.0.1:5080', '/hangfire': 'http://127.0.0.1:5080' } },
});
