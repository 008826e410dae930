<?xml version="1.0"?>
<!--
  Makes a QEMU capability cache that libvirt probed without KVM (TCG only) claim
  KVM, as setup.sh does for SEV: libvirt then offers domain type 'kvm', so the
  tests define the same kvm domains as on a KVM host. Used only when /dev/kvm is
  missing and setup.sh put a plain file there.
  - <flag name='kvm'/> before the first flag;
  - every top-level hostCPU, cpu and machine entry of type 'tcg' also as type
    'kvm' (copied whole: cpu entries have children);
  - what libvirt compares with the host before it trusts a KVM cache (else it
    re-probes and drops the patch): kernelVersion, microcodeVersion,
    hostCPUSignature, passed in as parameters (empty microcode: left out).
  Applying it to a cache that already has the kvm flag changes nothing.
-->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:param name="kernelVersion"/>
  <xsl:param name="microcodeVersion"/>
  <xsl:param name="hostCPUSignature"/>
  <xsl:variable name="patch" select="not(/qemuCaps/flag[@name='kvm'])"/>

  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>

  <xsl:template match="/qemuCaps/flag[1]">
    <xsl:if test="$patch">
      <flag name="kvm"/>
      <xsl:text>&#10;  </xsl:text>
    </xsl:if>
    <xsl:copy-of select="."/>
  </xsl:template>

  <!-- The host facts go right after <emulator>, replacing any stale ones. -->
  <xsl:template match="/qemuCaps/emulator">
    <xsl:copy-of select="."/>
    <xsl:if test="$patch">
      <xsl:text>&#10;  </xsl:text>
      <kernelVersion><xsl:value-of select="$kernelVersion"/></kernelVersion>
      <xsl:if test="$microcodeVersion != ''">
        <xsl:text>&#10;  </xsl:text>
        <microcodeVersion><xsl:value-of select="$microcodeVersion"/></microcodeVersion>
      </xsl:if>
      <xsl:text>&#10;  </xsl:text>
      <hostCPUSignature><xsl:value-of select="$hostCPUSignature"/></hostCPUSignature>
    </xsl:if>
  </xsl:template>
  <xsl:template match="/qemuCaps/kernelVersion | /qemuCaps/microcodeVersion | /qemuCaps/hostCPUSignature">
    <xsl:if test="not($patch)"><xsl:copy-of select="."/></xsl:if>
  </xsl:template>

  <xsl:template match="/qemuCaps/hostCPU[@type='tcg'] | /qemuCaps/cpu[@type='tcg'] | /qemuCaps/machine[@type='tcg']">
    <xsl:copy-of select="."/>
    <xsl:if test="$patch">
      <xsl:text>&#10;  </xsl:text>
      <xsl:copy>
        <xsl:attribute name="type">kvm</xsl:attribute>
        <xsl:copy-of select="@*[name() != 'type'] | node()"/>
      </xsl:copy>
    </xsl:if>
  </xsl:template>
</xsl:stylesheet>
