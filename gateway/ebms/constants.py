"""Namespaces, URIs and ICS2 profile constants used when building and checking AS4 messages."""

from __future__ import annotations

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_EB = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"
NS_EBBP = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSSE11 = "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_EC = "http://www.w3.org/2001/10/xml-exc-c14n#"

NSMAP = {"S12": NS_SOAP12, "eb": NS_EB, "ebbp": NS_EBBP, "wsse": NS_WSSE, "wsu": NS_WSU, "ds": NS_DS}

# Token value types (WSS X.509 token profile 1.1)
VT_PKIPATH = ("http://docs.oasis-open.org/wss/2004/01/"
              "oasis-200401-wss-x509-token-profile-1.0#X509PKIPathv1")
VT_X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
ENC_BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"

# Algorithms (eDelivery 1.4.2.6)
ALG_EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ALG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ALG_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
ALG_ATTACHMENT_CONTENT = ("http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1"
                          "#Attachment-Content-Signature-Transform")

# ebMS / ICS2 values
MEP_ONE_WAY = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/oneWay"
BINDING_PUSH = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/push"
BINDING_PULL = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/pull"
TEST_SERVICE = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/service"
TEST_ACTION = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/test"
DEFAULT_MPC = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC"
MPC_PREFIX = "urn:fdc:ec.europa.eu:2019:eu_ics2_c2t/EORI/"

AGREEMENT = "EU-ICS2-TI-V2.0"
AGREEMENT_TYPE = "ics2-interface-version"
SERVICE_T2C = "eu_ics2_t2c"
SERVICE_C2T = "eu_ics2_c2t"
SERVICE_TYPE = "eu-customs-service-type"
PARTY_TYPE_EORI = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:eu-customs:EORI"
PARTY_TYPE_AUTH = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:eu-customs:auth"
ROLE_TRADER = "Trader"
ROLE_CUSTOMS = "Customs"

MIME_XML = "application/xml"
MIME_GZIP = "application/gzip"
ATTACHMENT_MIME_TYPES = ("application/pdf", "image/jpeg")
SOAP_CONTENT_TYPE = "application/soap+xml"
