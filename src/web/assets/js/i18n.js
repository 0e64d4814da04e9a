// Translations: Italian is the default, English selectable; the choice is kept in
// localStorage ("pecd.lang"). Static text is marked in index.html with data-i18n (text
// content) and data-i18n-attr ("attr:key;attr:key"); dynamic text calls t().

const IT = {
  skip: 'Salta al contenuto principale',
  brand: 'Posta Elettronica Certificata',
  language: 'Lingua',
  logout: 'Esci',
  'login.title': 'Accedi alla tua casella PEC',
  'login.intro': "Inserisci l'indirizzo della casella e la password.",
  'login.user': 'Indirizzo PEC',
  'login.password': 'Password',
  'login.submit': 'Accedi',
  'login.bad': 'Nome utente o password errati.',
  'login.locked': 'Troppi tentativi falliti: accesso bloccato per qualche minuto.',
  'login.missing': 'Inserisci indirizzo e password.',
  'login.error': 'Accesso non riuscito: {0}',
  'folders.title': 'Cartelle',
  'folder.inbox': 'Posta in arrivo',
  'folder.sent': 'Inviata',
  'folder.drafts': 'Bozze',
  'folder.trash': 'Cestino',
  'folder.junk': 'Posta indesiderata',
  'folder.archive': 'Archivio',
  'folder.unread': '{0} non letti',
  'quota.title': 'Spazio occupato',
  'quota.text': '{0} di {1} ({2}%)',
  'quota.unlimited': '{0} (nessun limite)',
  'search.field': 'Cerca in',
  'search.text': 'Testo',
  'search.from': 'Mittente',
  'search.id': 'Identificativo',
  'search.label': 'Cerca messaggi',
  'search.placeholder': 'Cerca…',
  'search.go': 'Cerca',
  'search.results': 'Risultati per «{0}»',
  'sort.label': 'Ordina',
  'sort.newest': 'Più recenti prima',
  'sort.oldest': 'Meno recenti prima',
  'list.empty': 'Nessun messaggio.',
  'list.unread': 'non letto',
  'list.count': '{0} messaggi',
  'list.attach': 'con allegati',
  'pager.label': 'Pagine',
  'pager.prev': 'Precedenti',
  'pager.next': 'Successivi',
  'pager.info': '{0}–{1} di {2}',
  'reader.none': 'Nessun messaggio selezionato',
  'reader.pick': 'Seleziona un messaggio per leggerlo.',
  'reader.from': 'Da',
  'reader.to': 'A',
  'reader.cc': 'Cc',
  'reader.date': 'Data',
  'reader.subject': 'Oggetto',
  'reader.noSubject': '(senza oggetto)',
  'reader.original': 'Messaggio originale',
  'reader.envelope': 'Busta del gestore',
  'reader.attachments': 'Allegati',
  'reader.download': 'Scarica',
  'reader.downloadEml': 'Scarica il messaggio (.eml)',
  'reader.downloadEvidence': 'Scarica il fascicolo probatorio (.zip)',
  'reader.remoteBlocked': 'Le immagini remote sono bloccate per proteggere la tua riservatezza.',
  'reader.remoteShow': 'Mostra immagini remote',
  'reader.imgBlocked': '[immagine remota bloccata{0}]',
  'reader.htmlTitle': 'Contenuto HTML del messaggio',
  'reader.back': 'Torna all’elenco',
  'reader.loadError': 'Impossibile aprire il messaggio: {0}',
  'banner.ok': 'Firma del gestore verificata',
  'banner.okDetail': 'Firmato dal gestore «{0}», presente nell’indice dei gestori PEC. Il contenuto non è stato alterato dopo la firma.',
  'banner.cert': 'Certificato di firma: {0}',
  'banner.bad': 'Attenzione: firma del gestore NON verificata',
  'banner.badDetail': 'Questo messaggio si presenta come PEC, ma non è possibile garantirne l’integrità o la provenienza. Motivo: {0}',
  'banner.signer': 'Firmatario dichiarato: {0}',
  'banner.plain': 'Posta ordinaria: messaggio senza certificazione del gestore.',
  'dc.title': 'Dati di certificazione (daticert)',
  'dc.tipo': 'Tipo',
  'dc.errore': 'Esito',
  'dc.mittente': 'Mittente',
  'dc.destinatari': 'Destinatari',
  'dc.risposte': 'Risposte a',
  'dc.oggetto': 'Oggetto',
  'dc.gestore': 'Gestore emittente',
  'dc.data': 'Data e ora',
  'dc.identificativo': 'Identificativo',
  'dc.msgid': 'Message-ID',
  'dc.ricevuta': 'Tipo di ricevuta',
  'dc.consegna': 'Consegna a',
  'dc.erroreEsteso': 'Errore esteso',
  'dc.certificato': 'certificato',
  'dc.esterno': 'esterno (non PEC)',
  'kind.posta-certificata': 'Posta certificata',
  'kind.accettazione': 'Accettazione',
  'kind.non-accettazione': 'Non accettazione',
  'kind.presa-in-carico': 'Presa in carico',
  'kind.avvenuta-consegna': 'Consegna',
  'kind.errore-consegna': 'Mancata consegna',
  'kind.preavviso-errore-consegna': 'Preavviso di mancata consegna',
  'kind.rilevazione-virus': 'Rilevazione virus',
  'kind.anomalia': 'Anomalia',
  'kind.ordinaria': 'Posta ordinaria',
  'kind.unverified': 'non verificato',
  'kind.sent': 'Inviato',
  'banner.sent': 'Copia del messaggio che hai inviato. La certificazione è data dalle ricevute del gestore (stato della consegna qui sotto).',
  'tl.title': 'Stato della consegna',
  'tl.intro': 'Avanzamento per ciascun destinatario, dalle ricevute del gestore.',
  'tl.accettazione': 'Accettato dal tuo gestore',
  'tl.presa-in-carico': 'Preso in carico dal gestore del destinatario',
  'tl.avvenuta-consegna': 'Consegnato',
  'tl.errore-consegna': 'Non consegnato',
  'tl.preavviso-errore-consegna': 'Preavviso: consegna non ancora confermata dopo 12 ore',
  'tl.rilevazione-virus': 'Virus rilevato',
  'tl.non-accettazione': 'Non accettato',
  'tl.waiting': 'In attesa delle ricevute…',
  'tl.status.consegnato': 'consegnato',
  'tl.status.errore': 'non consegnato',
  'tl.status.inCorso': 'in corso',
  'tl.status.rifiutato': 'rifiutato',
  'tl.status.esterno': 'destinatario non PEC: nessuna ricevuta di consegna',
  'tl.open': 'Apri la ricevuta',
  'compose.open': 'Scrivi',
  'compose.title': 'Nuovo messaggio PEC',
  'compose.to': 'A',
  'compose.cc': 'Cc',
  'compose.bcc': 'Ccn',
  'compose.addrHelp': 'Uno o più indirizzi, separati da virgola.',
  'compose.ccHelp': 'I destinatari in copia ricevono la ricevuta di consegna sintetica.',
  'compose.bccHelp': 'La PEC non ammette destinatari nascosti (Ccn): ogni destinatario deve comparire in A o Cc. Un messaggio con Ccn non viene inviato.',
  'compose.subject': 'Oggetto',
  'compose.body': 'Testo',
  'compose.attach': 'Allegati',
  'compose.limits': 'Al massimo {0} in tutto, compreso il testo.',
  'compose.remove': 'Rimuovi {0}',
  'compose.form': 'Ricevuta di avvenuta consegna',
  'form.completa': 'Completa',
  'form.breve': 'Breve',
  'form.sintetica': 'Sintetica',
  'compose.formHelp': 'Completa: la ricevuta contiene tutto il messaggio. Breve: gli allegati sono sostituiti dalle loro impronte. Sintetica: solo i dati di certificazione.',
  'compose.send': 'Invia',
  'compose.cancel': 'Annulla',
  'compose.sending': 'Invio in corso…',
  'compose.uploading': 'Caricamento di {0}…',
  'compose.accepted': 'Messaggio accettato dal gestore.',
  'compose.acceptedDetail': 'Accettato il {0}. La ricevuta di accettazione arriva nella Posta in arrivo; lo stato della consegna è nella cartella Inviata.',
  'compose.refused': 'Messaggio NON accettato dal gestore.',
  'compose.refusedDetail': 'Motivo: {0}',
  'compose.errBcc': 'La PEC non ammette Ccn: sposta questi indirizzi in A o Cc, oppure svuota il campo Ccn.',
  'compose.errNoTo': 'Indica almeno un destinatario in A.',
  'compose.errAddr': 'Indirizzo non valido: {0}',
  'compose.errTooBig': 'Gli allegati superano il limite di {0}.',
  'compose.errTooMany': 'Troppi destinatari: al massimo {0}.',
  'compose.errorTitle': 'Correggi prima di inviare',
  'new.mail': 'Nuovi messaggi arrivati.',
  'error.generic': 'Errore: {0}',
  'error.session': 'La sessione è scaduta: accedi di nuovo.',
  'unknown': 'sconosciuto',
};

const EN = {
  skip: 'Skip to main content',
  brand: 'Certified e-mail (PEC)',
  language: 'Language',
  logout: 'Log out',
  'login.title': 'Log in to your PEC mailbox',
  'login.intro': 'Enter your mailbox address and password.',
  'login.user': 'PEC address',
  'login.password': 'Password',
  'login.submit': 'Log in',
  'login.bad': 'Wrong user name or password.',
  'login.locked': 'Too many failed attempts: login is blocked for a few minutes.',
  'login.missing': 'Enter your address and password.',
  'login.error': 'Login failed: {0}',
  'folders.title': 'Folders',
  'folder.inbox': 'Inbox',
  'folder.sent': 'Sent',
  'folder.drafts': 'Drafts',
  'folder.trash': 'Trash',
  'folder.junk': 'Junk',
  'folder.archive': 'Archive',
  'folder.unread': '{0} unread',
  'quota.title': 'Storage used',
  'quota.text': '{0} of {1} ({2}%)',
  'quota.unlimited': '{0} (no limit)',
  'search.field': 'Search in',
  'search.text': 'Text',
  'search.from': 'Sender',
  'search.id': 'Identifier',
  'search.label': 'Search messages',
  'search.placeholder': 'Search…',
  'search.go': 'Search',
  'search.results': 'Results for “{0}”',
  'sort.label': 'Sort',
  'sort.newest': 'Newest first',
  'sort.oldest': 'Oldest first',
  'list.empty': 'No messages.',
  'list.unread': 'unread',
  'list.count': '{0} messages',
  'list.attach': 'with attachments',
  'pager.label': 'Pages',
  'pager.prev': 'Previous',
  'pager.next': 'Next',
  'pager.info': '{0}–{1} of {2}',
  'reader.none': 'No message selected',
  'reader.pick': 'Select a message to read it.',
  'reader.from': 'From',
  'reader.to': 'To',
  'reader.cc': 'Cc',
  'reader.date': 'Date',
  'reader.subject': 'Subject',
  'reader.noSubject': '(no subject)',
  'reader.original': 'Original message',
  'reader.envelope': 'Provider envelope',
  'reader.attachments': 'Attachments',
  'reader.download': 'Download',
  'reader.downloadEml': 'Download the message (.eml)',
  'reader.downloadEvidence': 'Download the evidence bundle (.zip)',
  'reader.remoteBlocked': 'Remote images are blocked to protect your privacy.',
  'reader.remoteShow': 'Show remote images',
  'reader.imgBlocked': '[remote image blocked{0}]',
  'reader.htmlTitle': 'HTML content of the message',
  'reader.back': 'Back to the list',
  'reader.loadError': 'Cannot open the message: {0}',
  'banner.ok': 'Provider signature verified',
  'banner.okDetail': 'Signed by the provider “{0}”, listed in the index of PEC providers. The content has not been altered since it was signed.',
  'banner.cert': 'Signing certificate: {0}',
  'banner.bad': 'Warning: provider signature NOT verified',
  'banner.badDetail': 'This message presents itself as PEC, but its integrity or origin cannot be guaranteed. Reason: {0}',
  'banner.signer': 'Claimed signer: {0}',
  'banner.plain': 'Ordinary mail: this message carries no provider certification.',
  'dc.title': 'Certification data (daticert)',
  'dc.tipo': 'Type',
  'dc.errore': 'Outcome',
  'dc.mittente': 'Sender',
  'dc.destinatari': 'Recipients',
  'dc.risposte': 'Replies to',
  'dc.oggetto': 'Subject',
  'dc.gestore': 'Issuing provider',
  'dc.data': 'Date and time',
  'dc.identificativo': 'Identifier',
  'dc.msgid': 'Message-ID',
  'dc.ricevuta': 'Receipt form',
  'dc.consegna': 'Delivered to',
  'dc.erroreEsteso': 'Extended error',
  'dc.certificato': 'certified',
  'dc.esterno': 'external (not PEC)',
  'kind.posta-certificata': 'Certified message',
  'kind.accettazione': 'Acceptance',
  'kind.non-accettazione': 'Non-acceptance',
  'kind.presa-in-carico': 'Taken in charge',
  'kind.avvenuta-consegna': 'Delivery',
  'kind.errore-consegna': 'Non-delivery',
  'kind.preavviso-errore-consegna': 'Non-delivery warning',
  'kind.rilevazione-virus': 'Virus detected',
  'kind.anomalia': 'Anomaly',
  'kind.ordinaria': 'Ordinary mail',
  'kind.unverified': 'not verified',
  'kind.sent': 'Sent',
  'banner.sent': "Your copy of a message you sent. The providers' receipts certify it (delivery status below).",
  'tl.title': 'Delivery status',
  'tl.intro': "Progress for each recipient, from the providers' receipts.",
  'tl.accettazione': 'Accepted by your provider',
  'tl.presa-in-carico': "Taken in charge by the recipient's provider",
  'tl.avvenuta-consegna': 'Delivered',
  'tl.errore-consegna': 'Not delivered',
  'tl.preavviso-errore-consegna': 'Warning: delivery not confirmed after 12 hours',
  'tl.rilevazione-virus': 'Virus detected',
  'tl.non-accettazione': 'Not accepted',
  'tl.waiting': 'Waiting for receipts…',
  'tl.status.consegnato': 'delivered',
  'tl.status.errore': 'not delivered',
  'tl.status.inCorso': 'in progress',
  'tl.status.rifiutato': 'refused',
  'tl.status.esterno': 'recipient not on PEC: no delivery receipt',
  'tl.open': 'Open the receipt',
  'compose.open': 'Write',
  'compose.title': 'New PEC message',
  'compose.to': 'To',
  'compose.cc': 'Cc',
  'compose.bcc': 'Bcc',
  'compose.addrHelp': 'One or more addresses, separated by commas.',
  'compose.ccHelp': 'Recipients in Cc get the synthetic delivery receipt.',
  'compose.bccHelp': 'PEC does not allow hidden recipients (Bcc): every recipient must appear in To or Cc. A message with Bcc is not sent.',
  'compose.subject': 'Subject',
  'compose.body': 'Text',
  'compose.attach': 'Attachments',
  'compose.limits': 'At most {0} in all, text included.',
  'compose.remove': 'Remove {0}',
  'compose.form': 'Delivery receipt',
  'form.completa': 'Full',
  'form.breve': 'Short',
  'form.sintetica': 'Synthetic',
  'compose.formHelp': 'Full: the receipt holds the whole message. Short: attachments are replaced by their hashes. Synthetic: certification data only.',
  'compose.send': 'Send',
  'compose.cancel': 'Cancel',
  'compose.sending': 'Sending…',
  'compose.uploading': 'Uploading {0}…',
  'compose.accepted': 'Message accepted by the provider.',
  'compose.acceptedDetail': 'Accepted on {0}. The acceptance receipt arrives in the Inbox; the delivery status is in the Sent folder.',
  'compose.refused': 'Message NOT accepted by the provider.',
  'compose.refusedDetail': 'Reason: {0}',
  'compose.errBcc': 'PEC does not allow Bcc: move these addresses to To or Cc, or empty the Bcc field.',
  'compose.errNoTo': 'Give at least one recipient in To.',
  'compose.errAddr': 'Invalid address: {0}',
  'compose.errTooBig': 'The attachments exceed the limit of {0}.',
  'compose.errTooMany': 'Too many recipients: at most {0}.',
  'compose.errorTitle': 'Fix this before sending',
  'new.mail': 'New messages arrived.',
  'error.generic': 'Error: {0}',
  'error.session': 'Your session has expired: please log in again.',
  'unknown': 'unknown',
};

const DICTS = { it: IT, en: EN };
const KEY = 'pecd.lang';

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

let lang = DICTS[stored()] ? stored() : 'it';

export function getLang() {
  return lang;
}

export function locale() {
  return lang === 'en' ? 'en-GB' : 'it-IT';
}

/** The text for `key`, with {0}, {1}… replaced by `args`. */
export function t(key, ...args) {
  const s = DICTS[lang][key] ?? IT[key] ?? key;
  return s.replace(/\{(\d+)\}/g, (_, i) => String(args[Number(i)] ?? ''));
}

/** Fills every data-i18n / data-i18n-attr element under `root`. */
export function applyI18n(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':');
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}

export function setLang(l) {
  if (!DICTS[l]) return;
  lang = l;
  try {
    localStorage.setItem(KEY, l);
  } catch {
    /* private mode: the choice lasts for this page only */
  }
  applyI18n();
}

/** Human size: 1.2 MB. */
export function bytes(n) {
  if (n == null) return '';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toLocaleString(locale(), { maximumFractionDigits: i ? 1 : 0 })} ${u[i]}`;
}

export function dateTime(s) {
  if (!s) return '';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return s;
  return d.toLocaleString(locale(), { dateStyle: 'medium', timeStyle: 'short' });
}
