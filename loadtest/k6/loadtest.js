// loadtest.js - the original GopherMQ load test, for k6 (https://k6.io).
//
// Not run by `make bench` or CI (k6 is not packaged in Debian): wrk and
// loadtest/pubfetch.lua run the same scenario in the benchmark table.
//
// One subscriber on "load.test" is created in setup(); then every virtual
// user publishes ":(" to the subject, fetches the shared subscriber, and
// sleeps one second, with the number of virtual users ramping up to 1,000
// as in the original.  Both answers must be 200 (the original checked the
// publish answer twice and never the fetch).
//
//   k6 run loadtest/k6/loadtest.js
//   k6 run -e BASE_URL=http://127.0.0.1:8082 -e STAGE_SCALE=0.1 loadtest/k6/loadtest.js
//
// BASE_URL   the API's address (default http://localhost:8082)
// STAGE_SCALE multiplies every stage's duration (default 1: about 42 minutes)

import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8082';
const SCALE = parseFloat(__ENV.STAGE_SCALE || '1');
const SUBJECT = 'load.test';
const PARAMS = { headers: { 'Content-Type': 'application/json' } };

// [seconds, target VUs]: +50 VUs every 10 s up to 500, then longer steps.
const PROFILE = [
    [10, 50], [10, 100], [10, 150], [10, 200], [10, 250],
    [10, 300], [10, 350], [10, 400], [10, 450], [10, 500],
    [160, 550], [170, 600], [180, 650], [190, 700], [200, 750],
    [210, 800], [220, 850], [230, 900], [240, 950], [600, 1000],
];

export const options = {
    stages: PROFILE.map(([seconds, target]) => ({
        duration: `${Math.max(1, Math.round(seconds * SCALE))}s`,
        target: target,
    })),
    thresholds: {
        checks: ['rate>0.99'],
    },
};

export function setup() {
    const res = http.post(`${BASE_URL}/api/subscribe`, JSON.stringify({ subject: SUBJECT }), PARAMS);
    if (res.status !== 200) {
        throw new Error(`subscribe failed: ${res.status} ${res.body}`);
    }
    return { id: JSON.parse(res.body).id };
}

export default function (data) {
    const published = http.post(`${BASE_URL}/api/publish`,
        JSON.stringify({ subject: SUBJECT, data: ':(' }), PARAMS);
    check(published, { 'publish is 200': (r) => r.status === 200 });

    const fetched = http.post(`${BASE_URL}/api/fetch`,
        JSON.stringify({ subject: SUBJECT, id: data.id }), PARAMS);
    check(fetched, {
        'fetch is 200': (r) => r.status === 200,
        'fetch returns a list': (r) => r.status === 200 && Array.isArray(r.json('data')),
    });

    sleep(1);
}
