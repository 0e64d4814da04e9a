// One badge per PEC kind (certified message, each receipt kind, anomaly, ordinary mail);
// a message that claims to be PEC but whose signature did not verify gets a second,
// red "not verified" badge, so the list never shows a forged receipt as a good one.

import { h, icon } from './dom.js';
import { t } from './i18n.js';

const ICONS = {
  'posta-certificata': 'it-locked',
  accettazione: 'it-check',
  'non-accettazione': 'it-ban',
  'presa-in-carico': 'it-exchange-circle',
  'avvenuta-consegna': 'it-check-circle',
  'errore-consegna': 'it-close-circle',
  'preavviso-errore-consegna': 'it-clock',
  'rilevazione-virus': 'it-error',
  anomalia: 'it-warning-circle',
  ordinaria: 'it-mail',
};

/** `sent`: the message is the user's own copy in Sent, which carries no certification
 * itself (its receipts do), so it is badged as sent rather than as ordinary mail. */
export function kindBadge(pec, sent = false) {
  if (sent && (!pec || pec.kind === 'ordinaria')) {
    return h('span', { class: 'kind-badges' },
      h('span', { class: 'badge kind k-sent', 'data-kind': 'sent' }, icon('it-upload', 'icon-xs icon-white me-1'), t('kind.sent')));
  }
  const kind = pec?.kind || 'ordinaria';
  const wrap = h('span', { class: 'kind-badges' },
    h('span', { class: `badge kind k-${kind}`, 'data-kind': kind }, icon(ICONS[kind] || 'it-mail', 'icon-xs icon-white me-1'), t(`kind.${kind}`)));
  if (kind !== 'ordinaria' && pec && !pec.verdict?.verified) {
    wrap.appendChild(h('span', { class: 'badge kind k-bad ms-1', 'data-unverified': '' }, t('kind.unverified')));
  }
  return wrap;
}
