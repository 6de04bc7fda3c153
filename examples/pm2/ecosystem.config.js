// A PM2 ecosystem file: `grpm import pm2 examples/pm2/ecosystem.config.js` writes it as a grpm
// app file (README, "Coming from PM2 or supervisord").
module.exports = {
  apps: [{
    name: 'web',
    script: 'python3',
    args: '-m http.server 8766 --bind 127.0.0.1',
    env: { PYTHONUNBUFFERED: '1' },
    max_memory_restart: '200M',
    kill_timeout: 3000,
    out_file: '/var/log/web.out.log',
  }, {
    name: 'worker',
    script: 'worker.sh',
    exp_backoff_restart_delay: 100,
    cron_restart: '0 3 * * *',
    time: true,
    exec_mode: 'cluster',
  }],
};
